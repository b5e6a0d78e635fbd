"""What `perchd bench` measures: the raw in-process pipeline, and a daemon subprocess over HTTP.

Raw = decode + preprocess + invoke + postprocess in this process, without HTTP, with the daemon's own code and
configuration: one 1-thread interpreter, one all-core interpreter (the lone-request path), and one 1-thread
interpreter per worker all busy at once.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from ..accelerators.probe import probe
from .config import Settings
from .manifest import load_manifest
from .procfs import rss_mb
from .registry import ModelRegistry


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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/vision/detection"

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

Post = Callable[[aiohttp.ClientSession], Awaitable[None]]


def multipart_post(url: str, data: bytes) -> Post:
    """One CodeProject/DeepStack detection request. The body is built once: a camera server (Blue Iris, Frigate)
    sends bytes it already has, and rebuilding the form per request would measure this client, not the server."""
    boundary = "perchbench0boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"bench.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    async def post(http: aiohttp.ClientSession) -> None:
        async with http.post(url, data=body, headers=headers) as resp:
            payload = await resp.read()
        if resp.status != 200 or not payload.startswith(b'{"success":true'):
            raise RuntimeError(f"{url} answered {resp.status} {payload[:200]!r}")

    return post


class Client:
    """Requests to one server over keep-alive connections, in blocks of a few seconds."""

    def __init__(self, post: Post, connections: int) -> None:
        self.post = post
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections))

    async def warm(self, n: int = 10) -> None:
        for _ in range(n):
            await self.post(self.http)

    async def latency(self, seconds: float) -> list[float]:
        out: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            await self.post(self.http)
            out.append((time.perf_counter() - t) * 1000)
        return out

    async def throughput(self, level: int, seconds: float) -> tuple[int, float]:
        """(answers, seconds) with `level` requests always in flight."""
        done = 0
        stop = time.perf_counter() + seconds

        async def one() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await self.post(self.http)
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(level)))
        return done, time.perf_counter() - t0

    async def close(self) -> None:
        await self.http.close()
