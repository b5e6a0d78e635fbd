"""What `perchd bench` measures: the raw in-process pipeline, and a daemon subprocess over HTTP.

Raw = decode + preprocess + invoke + postprocess in this process, without HTTP, with the daemon's own code and
configuration: one 1-thread interpreter, one all-core interpreter (the lone-request path), and one 1-thread
interpreter per worker all busy at once.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
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


def _latency(fn: Callable[[], object], seconds: float) -> list[float]:
    for _ in range(5):
        fn()
    out: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def raw_figures(settings: Settings, model_id: str, data: bytes, seconds: float) -> dict[str, Any]:
    """p50 of one 1-thread and of one all-core interpreter, and img/s of every 1-thread worker at once."""
    registry = ModelRegistry(settings, load_manifest(), probe(settings.hardware_root))
    model = registry.placement.load_detector(model_id)
    det, sessions, lone = model.detector, model.pool.sessions, model.pool.lone
    max_px = settings.limits.max_pixels
    try:
        one = _latency(lambda: det.run_bytes(sessions[0], data, 0.4, max_px), seconds)
        every = _latency(lambda: det.run_bytes(lone, data, 0.4, max_px), seconds) if lone is not None else one
        counts = [0] * len(sessions)
        stop = time.perf_counter() + seconds

        def worker(i: int) -> None:
            while time.perf_counter() < stop:
                det.run_bytes(sessions[i], data, 0.4, max_px)
                counts[i] += 1

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(sessions))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {
            "model": model.id, "device": model.inference_device, "workers": len(sessions),
            "lone_threads": registry.placement.lone_threads(model.kind),
            "p50_1thread": statistics.median(one), "p50_all": statistics.median(every),
            "p99_all": pct(every, 0.99), "rps_workers": sum(counts) / (time.perf_counter() - t0),
        }
    finally:
        model.pool.close()
        registry.close()


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


async def _load(post: Post, seconds: float, levels: list[int], latency: bool) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=max([*levels, 1]) + 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(10):
            await post(http)
        out: dict[str, Any] = {"rps": {}}
        if latency:
            lat: list[float] = []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t = time.perf_counter()
                await post(http)
                lat.append((time.perf_counter() - t) * 1000)
            out.update(p50=statistics.median(lat), p99=pct(lat, 0.99))
        for level in levels:
            done = 0
            stop = time.perf_counter() + seconds

            async def client(stop: float = stop) -> None:
                nonlocal done
                while time.perf_counter() < stop:
                    await post(http)
                    done += 1

            t0 = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(level)))
            out["rps"][level] = done / (time.perf_counter() - t0)
        return out


def rest_figures(post: Post, seconds: float, levels: list[int], latency: bool = True) -> dict[str, Any]:
    """p50/p99 of sequential requests (concurrency 1) and req/s at each concurrency level."""
    return asyncio.run(_load(post, seconds, levels, latency))
