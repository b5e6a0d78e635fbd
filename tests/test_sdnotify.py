"""The sd_notify client against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import select
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from perch.daemon.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def nothing_pending(sock: socket.socket) -> bool:
    # AF_UNIX datagrams are queued synchronously by sendto(): a zero-timeout poll is a reliable check.
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def test_ready_status_stopping(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.status("loading detection model")
    assert receive(sock) == ["STATUS=loading detection model"]
    assert notifier.ready("serving on 32168, 5000")
    assert receive(sock) == ["READY=1", "STATUS=serving on 32168, 5000"]
    assert notifier.ready()
    assert receive(sock) == ["READY=1"]
    assert notifier.stopping()
    assert receive(sock) == ["STOPPING=1"]
    notifier.close()


def test_status_newlines_cannot_inject_assignments(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.status("line one\nREADY=1")
    assert receive(sock) == ["STATUS=line one READY=1"]


def test_extend_timeout(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert Notifier({"NOTIFY_SOCKET": path}).extend_timeout(90)
    assert receive(sock) == ["EXTEND_TIMEOUT_USEC=90000000"]


def test_abstract_socket() -> None:
    name = f"perch-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert receive(sock) == ["READY=1"]
    finally:
        sock.close()


def test_watchdog_interval_and_pid() -> None:
    mine = str(os.getpid())
    assert Notifier({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": mine}).watchdog_interval() == 60.0
    assert Notifier({"WATCHDOG_USEC": "500000"}).watchdog_interval() == 0.5
    # Set for another process (inherited environment): not ours to feed.
    assert Notifier({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval() is None
    assert Notifier({}).watchdog_interval() is None


def test_watchdog_pings_are_throttled(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3600000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier(env)
    assert notifier.watchdog()
    assert receive(sock) == ["WATCHDOG=1"]
    # A busy inference loop calls this per job; within a quarter of the interval nothing more is sent.
    for _ in range(100):
        assert notifier.watchdog()
    assert nothing_pending(sock)


def test_watchdog_without_interval_always_sends(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    for _ in range(3):
        assert notifier.watchdog()
        assert receive(sock) == ["WATCHDOG=1"]


def test_noop_outside_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert notifier.watchdog_interval() is None
    # Transports other than AF_UNIX paths are not ours either.
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_vanished_receiver_does_not_raise(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()


def test_reads_process_environment(
    monkeypatch: pytest.MonkeyPatch, listener: tuple[socket.socket, str]
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert Notifier().ready()
    assert receive(sock) == ["READY=1"]
