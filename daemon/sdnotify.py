"""systemd service notifications: READY/STATUS/WATCHDOG/STOPPING over $NOTIFY_SOCKET (see sd_notify(3)).

perchd.service is ``Type=notify`` with ``WatchdogSec=``: systemd waits for READY=1 before it calls the service
started, and restarts it when WATCHDOG=1 stops arriving. Outside systemd (tests, a shell, a container) every
call is a no-op that returns False, so callers never need to check where they run.

The protocol is one datagram of newline-separated ``KEY=VALUE`` lines to an AF_UNIX socket; the standard
library does it in a few lines, which keeps the appliance free of a dependency for it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

__all__ = ["Notifier"]


def _socket_address(value: str) -> str | None:
    """Socket address from $NOTIFY_SOCKET: a path, or ``@name`` for a Linux abstract socket."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # Empty: not a notify-type service. Anything else (vsock:...) is a transport perchd never runs under.
    return None


def _watchdog_seconds(environ: Mapping[str, str]) -> float | None:
    """The watchdog timeout systemd set for this process, like sd_watchdog_enabled(3)."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    # The variables are inherited by children; only the process systemd meant may feed the watchdog.
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


class Notifier:
    """Sends sd_notify messages; safe to share between threads and to call from the event loop.

    Sends never block: the socket is non-blocking and a full or vanished receiver only makes the call return
    False (and log at debug level), so an inference worker can call :meth:`watchdog` after every job.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog = _watchdog_seconds(env)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._last_ping: float | None = None

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens for notifications."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds (WatchdogSec=), or None when no watchdog watches this process.

        Feed it at least twice per interval: a heartbeat every ``interval / 2`` is what sd_watchdog_enabled(3)
        recommends.
        """
        return self._watchdog

    def notify(self, *assignments: str) -> bool:
        """Send raw ``KEY=VALUE`` assignments in one datagram; True when the datagram was delivered."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode()
        with self._lock:
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    sock.setblocking(False)
                    self._sock = sock
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                log.debug("sd_notify %r failed: %s", assignments, exc)
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up finished: models loaded, listeners bound. Optionally replaces the status line."""
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """Free-form status line shown by ``systemctl status perchd``."""
        return self.notify(*_status(text))

    def watchdog(self) -> bool:
        """Feed the watchdog (WATCHDOG=1); cheap enough per inference: throttled to a quarter interval."""
        if self._address is None:
            return False
        now = time.monotonic()
        last = self._last_ping
        if self._watchdog is not None and last is not None and now - last < self._watchdog / 4:
            return True
        sent = self.notify("WATCHDOG=1")
        if sent:
            self._last_ping = now
        return sent

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time for the current start-up or shutdown step (a first TensorRT engine build)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1_000_000))}")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun; systemd stops expecting watchdog pings."""
        return self.notify("STOPPING=1", *_status(status))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _status(text: str | None) -> tuple[str, ...]:
    # One datagram is newline-separated assignments: a newline inside the text would start a bogus one.
    return () if text is None else ("STATUS=" + " ".join(text.splitlines()),)
