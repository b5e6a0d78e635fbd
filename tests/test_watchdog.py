"""systemd integration of the daemon: READY/STATUS at start-up, WATCHDOG=1 while healthy, silence when hung."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from perch.daemon.config import Settings
from perch.daemon.core import Core

from conftest import MODELS, free_port


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


async def test_hung_inference_stops_the_watchdog(tmp_path: Path, settings: Settings,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = _listen(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    core = Core(settings)
    await core.start()
    heartbeat = asyncio.create_task(core.loop_heartbeat())
    try:
        healthy = await asyncio.to_thread(_drain, sock, 3.0)
        assert "WATCHDOG=1" in healthy
        pool = core.registry.loaded["ssd_mobilenet_v1"].pool
        pool.busy_since[0] = time.monotonic() - 60  # as if an NPU call had hung for a minute
        await asyncio.to_thread(_drain, sock, 0.5)
        assert "WATCHDOG=1" not in await asyncio.to_thread(_drain, sock, 2.5)
    finally:
        heartbeat.cancel()
        await core.close()
        sock.close()
