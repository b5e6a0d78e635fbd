"""Logging set-up and the in-memory ring the /v1/log/list route reads."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import deque
from datetime import datetime, timezone
from typing import Any


class LogRing(logging.Handler):
    """Keeps the last `capacity` records with increasing ids, for clients that poll with last_id."""

    def __init__(self, capacity: int = 1000) -> None:
        super().__init__(level=logging.INFO)
        self._entries: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._next_id = 1
        self._mutex = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string must not break logging
            text = str(record.msg)
        with self._mutex:
            self._entries.append({
                "id": self._next_id,
                "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                "entry": text,
                "level": record.levelname.lower(),
                "logger": record.name,
            })
            self._next_id += 1

    def entries(self, count: int = 20, last_id: int = 0) -> list[dict[str, Any]]:
        with self._mutex:
            newer = [e for e in self._entries if e["id"] > last_id]
        return newer[:count] if last_id else newer[-count:]


LOG_RING = LogRing()


def setup_logging(level: str = "info") -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        if getattr(handler, "_perch", False):
            root.removeHandler(handler)
    stream = logging.StreamHandler(sys.stderr)
    # journald stamps every line itself; a second timestamp only adds noise.
    if os.environ.get("JOURNAL_STREAM"):
        fmt = "%(levelname)s %(name)s: %(message)s"
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    stream.setFormatter(logging.Formatter(fmt))
    stream._perch = True  # type: ignore[attr-defined]
    root.addHandler(stream)
    if LOG_RING not in root.handlers:
        root.addHandler(LOG_RING)
    # aiohttp's own access log would duplicate our one-line-per-request log.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
