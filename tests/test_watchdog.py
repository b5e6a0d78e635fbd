"""systemd integration of the daemon: READY/STATUS at start-up, WATCHDOG=1 while healthy, silence when hung — an
NPU call that really blocks (the RKNNLite stand-in waiting on an event) or an event loop that really stops turning —
and feeding again once released. A real AF_UNIX NOTIFY_SOCKET receives every message."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from perch.daemon.api.common import CODEPROJECT
from perch.daemon.app import create_app
from perch.daemon.config import Settings
from perch.daemon.core import Core

from conftest import MODELS, REPO, free_port, image_bytes
from helpers import standins


def _listen(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    return sock, path


def _drain(sock: socket.socket, seconds: float, until: Callable[[list[str]], bool] | None = None) -> list[str]:
    out: list[str] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (until and until(out)):
        with contextlib.suppress(TimeoutError):
            out += sock.recv(4096).decode().splitlines()
    return out


def test_daemon_notifies_ready_and_feeds_watchdog(tmp_path: Path) -> None:
    sock, path = _listen(tmp_path)
    port = free_port()
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="2000000", PERCHD_MODEL_DIR=str(MODELS),
               PERCHD_STATE_DIR=str(tmp_path / "s"), PERCHD_LEGACY_PORT="0", PERCHD_HOST="127.0.0.1",
               PERCHD_CONFIG="")
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "perch.daemon", "run", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        messages = _drain(sock, 30, lambda m: "READY=1" in m and m.count("WATCHDOG=1") >= 2)
        assert any(m.startswith("STATUS=loading model") for m in messages), messages
        assert "READY=1" in messages
        assert messages.count("WATCHDOG=1") >= 2
    finally:
        proc.terminate()
        proc.wait(20)
        assert "STOPPING=1" in _drain(sock, 0.5)
        sock.close()


def _stamped(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    """(monotonic arrival time, line) of every notification within `seconds`."""
    out: list[tuple[float, str]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(TimeoutError):
            data = sock.recv(4096).decode()
            out += [(time.monotonic(), line) for line in data.splitlines()]
    return out


@pytest.fixture
async def npu_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Core, TestClient, Any,
                                                                                            socket.socket]]:
    """A daemon serving on the RK3588's three NPU cores through the RKNNLite stand-in, under a real NOTIFY_SOCKET
    with WatchdogSec=2 (it must be fed at least every 1.5 s: Core._watchdog_limit)."""
    sock, path = _listen(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    settings = Settings(model_dir=MODELS, state_dir=tmp_path / "s", cache_dir=tmp_path / "c", legacy_port=0,
                        cpu={"workers": 1}, hardware_root=REPO / "tests/fixtures/boards/orangepi5-rk3588s-vendor")
    with standins.rknnlite(monkeypatch, {"yolox_nano_rk3588_fp16.rknn": MODELS / "detection/yolox_nano.onnx"}) as lite:
        core = Core(settings)
        await core.start()
        heartbeat = asyncio.create_task(core.loop_heartbeat())
        try:
            async with TestClient(TestServer(create_app(core, CODEPROJECT))) as client:
                yield core, client, lite, sock
        finally:
            heartbeat.cancel()
            await core.close()
            sock.close()


async def test_a_really_hung_npu_call_stops_the_watchdog(npu_daemon: tuple[Core, TestClient, Any, socket.socket]
                                                         ) -> None:
    core, client, lite, sock = npu_daemon
    assert core.registry.loaded["yolox_nano"].inference_device == "NPU"
    assert "WATCHDOG=1" in await asyncio.to_thread(_drain, sock, 3.0, lambda m: "WATCHDOG=1" in m)
    release = threading.Event()
    lite.faults.hold = release  # the next RKNNLite.inference blocks like a hung NPU driver
    fd = FormData()
    fd.add_field("image", image_bytes("pets.jpg"), filename="a.jpg")
    request = asyncio.create_task(client.post("/v1/vision/detection", data=fd))
    try:
        assert await asyncio.to_thread(lite.faults.blocked.wait, 10)
        hung_at = time.monotonic()
        messages = await asyncio.to_thread(_stamped, sock, 3.0)
        # After the limit (1.5 s, plus the throttle's margin) nothing feeds systemd: it would restart the service.
        assert not [t for t, m in messages if m == "WATCHDOG=1" and t > hung_at + 2.0], messages
        # ... while the event loop is fine and says so.
        ping = await client.get("/v1/status/ping")
        assert ping.status == 200 and (await ping.json())["success"]
    finally:
        release.set()
    response = await request
    assert response.status == 200 and (await response.json())["inferenceDevice"] == "NPU"
    assert "WATCHDOG=1" in await asyncio.to_thread(_drain, sock, 2.0, lambda m: "WATCHDOG=1" in m)


async def test_a_blocked_event_loop_stops_the_watchdog(npu_daemon: tuple[Core, TestClient, Any, socket.socket]
                                                       ) -> None:
    _, client, _, sock = npu_daemon
    assert "WATCHDOG=1" in await asyncio.to_thread(_drain, sock, 3.0, lambda m: "WATCHDOG=1" in m)
    listener = asyncio.get_running_loop().run_in_executor(None, _stamped, sock, 4.5)
    await asyncio.sleep(0.2)
    blocked_at = time.monotonic()
    time.sleep(3.5)  # the test hook: a callback hogging the event loop (the idle NPU workers keep asking to feed)
    unblocked_at = time.monotonic()
    messages = await listener
    assert not [t for t, m in messages if m == "WATCHDOG=1" and blocked_at + 2.0 < t < unblocked_at], messages
    assert [t for t, m in messages if m == "WATCHDOG=1" and t >= unblocked_at], messages  # fed again at once
    assert (await client.get("/v1/status/ping")).status == 200
