"""The recent-events ring the dashboard lists: the last objects the cameras saw, each with its latest snapshot.

Bounded by count (oldest dropped first), in memory only: it is a view of the last minutes for a person looking at
the dashboard, not a recording (MQTT subscribers and Home Assistant keep the history).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

# 50 snapshots of a 640x480 camera at JPEG quality 80 are about 3 MB; full-HD snapshots hit the byte cap first.
RECENT_EVENTS = 50
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024


@dataclass
class RecentEvent:
    id: str
    camera: str
    label: str
    score: float
    top_score: float
    start_time: float
    end_time: float | None
    stationary: bool
    last_type: str  # new | update | end
    snapshot: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "camera": self.camera,
            "label": self.label,
            "score": self.score,
            "top_score": self.top_score,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "stationary": self.stationary,
            "type": self.last_type,
            "has_snapshot": self.snapshot is not None,
        }


class RecentEvents:
    """One entry per tracked object, updated by its new / update / end events. Used on the event loop only."""

    def __init__(self, capacity: int = RECENT_EVENTS, max_bytes: int = MAX_SNAPSHOT_BYTES) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._events: OrderedDict[str, RecentEvent] = OrderedDict()
        self._bytes = 0

    def record(self, kind: str, after: dict[str, Any], snapshot: bytes | None) -> None:
        event_id = str(after.get("id", ""))
        if not event_id:
            return
        entry = self._events.get(event_id)
        if entry is None:
            entry = RecentEvent(event_id, str(after.get("camera", "")), str(after.get("label", "")), 0.0, 0.0,
                                float(after.get("start_time") or 0.0), None, False, kind)
            self._events[event_id] = entry
        entry.score = float(after.get("score") or 0.0)
        entry.top_score = float(after.get("top_score") or entry.score)
        entry.end_time = after.get("end_time")
        entry.stationary = bool(after.get("stationary"))
        entry.last_type = kind
        if snapshot is not None:
            self._bytes += len(snapshot) - len(entry.snapshot or b"")
            entry.snapshot = snapshot
        while len(self._events) > self.capacity or (self._bytes > self.max_bytes and len(self._events) > 1):
            _, dropped = self._events.popitem(last=False)
            self._bytes -= len(dropped.snapshot or b"")

    def list(self, camera: str | None = None, limit: int = RECENT_EVENTS) -> list[dict[str, Any]]:
        """Newest first (by start time: an object that is still in view keeps its place)."""
        events = [e for e in self._events.values() if camera is None or e.camera == camera]
        events.sort(key=lambda e: e.start_time, reverse=True)
        return [e.to_dict() for e in events[:max(0, limit)]]

    def snapshot(self, event_id: str) -> RecentEvent | None:
        return self._events.get(event_id)
