"""What `perchd bench` measures: the raw in-process pipeline, and a daemon subprocess over HTTP.

Raw = decode + preprocess + invoke + postprocess in this process, without HTTP, with the daemon's own code and
configuration: one 1-thread interpreter, one all-core interpreter (the lone-request path), and one 1-thread
interpreter per worker all busy at once.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..accelerators.probe import probe
from .config import Settings
from .manifest import load_manifest
from .procfs import rss_mb
from .registry import ModelRegistry

T = TypeVar("T")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Raw:
    """The daemon's detection pipeline for one model, in this process: its 1-thread worker Sessions and its all-core
    lone Session (the same as a 1-thread one on a single core)."""

    def __init__(self, settings: Settings, model_id: str, data: bytes) -> None:
        self.registry = ModelRegistry(settings, load_manifest(), probe(settings.hardware_root))
        self.model = self.registry.placement.load_detector(model_id)
        self.lone_threads = self.registry.placement.lone_threads(self.model.kind)
        self.data = data
        self.max_px = settings.limits.max_pixels
        self._run(self.sessions[0])

    @property
    def sessions(self) -> list[Any]:
        return list(self.model.pool.sessions)

    @property
    def lone(self) -> Any:
        return self.model.pool.lone or self.model.pool.sessions[0]

    def _run(self, session: Any) -> None:
        self.model.detector.run_bytes(session, self.data, 0.4, self.max_px)

    def latency(self, session: Any, seconds: float) -> list[float]:
        """ms per image, one after another, for `seconds`."""
        out: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            self._run(session)
            out.append((time.perf_counter() - t) * 1000)
        return out

    def throughput(self, seconds: float) -> tuple[int, float]:
        """(images, seconds) with every 1-thread worker Session busy in its own thread."""
        sessions = self.sessions
        counts = [0] * len(sessions)
        stop = time.perf_counter() + seconds

        def worker(i: int) -> None:
            while time.perf_counter() < stop:
                self._run(sessions[i])
                counts[i] += 1

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(sessions))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts), time.perf_counter() - t0

    def close(self) -> None:
        self.model.pool.close()
        self.registry.close()


# ---- a daemon (or a peer) as a subprocess -------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> float:
    """Seconds until `url` answers 200; SystemExit if the process dies or it never does."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return time.monotonic() - t0
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:g} s")


class Daemon:
    """`perchd run` on a free port with this bench's settings (and optionally a config file with cameras)."""

    def __init__(self, settings: Settings, model_id: str, config: Path | None = None) -> None:
        self.port = free_port()
        env = dict(os.environ, PERCHD_PORT=str(self.port), PERCHD_LEGACY_PORT="0", PERCHD_LOG_LEVEL="warning",
                   PERCHD_HOST="127.0.0.1", PERCHD_MODEL_DIR=str(settings.model_dir),
                   PERCHD_STATE_DIR=str(settings.state_dir), PERCHD_CACHE_DIR=str(settings.cache_dir),
                   PERCHD__DETECTION__MODEL=model_id, PERCHD_CONFIG=str(config or ""))
        for key, value in (("WORKERS", settings.cpu.workers), ("THREADS", settings.cpu.threads),
                           ("LONE_THREADS", settings.cpu.lone_threads)):
            if value is not None:
                env[f"PERCHD__CPU__{key}"] = str(value)
        self.proc = subprocess.Popen([sys.executable, "-m", "perch.daemon", "run"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.ready_s = wait_http(f"http://127.0.0.1:{self.port}/v1/status/ping", self.proc)
        except BaseException:
            self.stop()
            raise

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---- load generators ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Post:
    """One request, encoded once: a camera server (Blue Iris, Frigate) sends bytes it already has, and rebuilding
    the form per request would measure this client, not the server."""

    port: int
    raw: bytes  # the whole HTTP/1.1 request, headers and body
    expect: bytes  # what a successful answer's body contains

    @classmethod
    def build(cls, port: int, path: str, content_type: str, body: bytes, expect: bytes) -> Post:
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        return cls(port, head + body, expect)


def multipart_post(port: int, data: bytes, path: str = "/v1/vision/detection") -> Post:
    """A CodeProject/DeepStack detection request with the photo in the `image` field."""
    boundary = "perchbench0boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"bench.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return Post.build(port, path, f"multipart/form-data; boundary={boundary}", body, b'"success":true')


_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class Client:
    """Requests to one server over keep-alive connections, in blocks of a few seconds. A plain HTTP/1.1 client on
    asyncio streams: a full client library costs ~0.5 ms of CPU per request on these cores, which would be counted
    in every server's latency and taken from every server's CPU."""

    def __init__(self, post: Post, connections: int) -> None:
        self.post = post
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def one(self) -> None:
        reused = bool(self._idle)
        reader, writer = self._idle.pop() if reused else await self._connect()
        try:
            writer.write(self.post.raw)
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            if not reused:
                raise
            # The server closed an idle keep-alive connection (uvicorn does after 5 s): once more on a new one.
            reader, writer = await self._connect()
            writer.write(self.post.raw)
            head = await reader.readuntil(b"\r\n\r\n")
        length = _LENGTH.search(head)
        if length is None:
            raise RuntimeError(f"answer without Content-Length: {head[:200]!r}")
        body = await reader.readexactly(int(length.group(1)))
        self._idle.append((reader, writer))
        if head[9:12] != b"200" or self.post.expect not in body:
            raise RuntimeError(f"server answered {head[:12]!r} {body[:200]!r}")

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.post.port)

    async def warm(self, n: int = 10) -> None:
        for _ in range(n):
            await self.one()

    async def latency(self, seconds: float) -> list[float]:
        out: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            await self.one()
            out.append((time.perf_counter() - t) * 1000)
        return out

    async def throughput(self, level: int, seconds: float) -> tuple[int, float]:
        """(answers, seconds) with `level` requests always in flight."""
        done = 0
        stop = time.perf_counter() + seconds

        async def one() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await self.one()
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(level)))
        return done, time.perf_counter() - t0

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def run(main: Coroutine[Any, Any, T]) -> T:
    """The bench's own loop: uvloop where installed, like the daemon, so the client adds as little as it can."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
