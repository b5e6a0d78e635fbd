"""A small IoU tracker: gives each object an id across detection runs so MQTT gets new / update / end events.

norfair was the first choice, but it pins numpy < 2 (the LiteRT runtime here needs numpy 2) and pulls scipy and
filterpy; at a handful of objects per camera and a few detections per second, greedy same-label IoU matching is
as good as Hungarian assignment and needs nothing.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..vision.types import Detection
from .config import TrackerConfig

Box = tuple[int, int, int, int]

# Frames in a row with the centre inside `stationary_move` before an object counts as stationary.
STATIONARY_RUNS = 3
# A top score must improve by this much to be worth an update event / a new snapshot.
SCORE_STEP = 0.05


def iou(a: Box, b: Box) -> float:
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre(b: Box) -> tuple[float, float]:
    return ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)


@dataclass(eq=False)
class Track:
    id: str
    label: str
    box: Box
    score: float
    top_score: float
    start_time: float
    frame_time: float
    hits: int = 1
    misses: int = 0
    confirmed: bool = False
    stationary: bool = False
    end_time: float | None = None
    has_snapshot: bool = False
    # True when the latest detection run set top_score: its frame is the best view of the object so far.
    best_now: bool = True
    # top_score of the last published snapshot (-1 = none yet).
    snapshot_score: float = -1.0
    _anchor: tuple[float, float] = (0.0, 0.0)
    _still_runs: int = 0
    # The last payload published for this object: the `before` of the next event.
    published: dict[str, Any] | None = None
    last_event_mono: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def snapshot_due(self) -> bool:
        return self.confirmed and self.top_score >= self.snapshot_score + SCORE_STEP

    def payload(self, camera: str) -> dict[str, Any]:
        x1, y1, x2, y2 = self.box
        return {
            "id": self.id,
            "camera": camera,
            "label": self.label,
            "score": round(self.score, 4),
            "top_score": round(self.top_score, 4),
            "box": [x1, y1, x2, y2],
            "area": max(0, x2 - x1) * max(0, y2 - y1),
            "stationary": self.stationary,
            "start_time": round(self.start_time, 3),
            "end_time": None if self.end_time is None else round(self.end_time, 3),
            "frame_time": round(self.frame_time, 3),
            "has_snapshot": self.has_snapshot,
        }


@dataclass
class TrackerResult:
    new: list[Track] = field(default_factory=list)
    updated: list[Track] = field(default_factory=list)  # confirmed tracks seen this run
    ended: list[Track] = field(default_factory=list)


class IouTracker:
    def __init__(self, cfg: TrackerConfig, frame_diag: float = 1.0) -> None:
        self.cfg = cfg
        self.tracks: list[Track] = []
        self.frame_diag = frame_diag

    @property
    def confirmed(self) -> list[Track]:
        return [t for t in self.tracks if t.confirmed]

    def counts(self, labels: Sequence[str]) -> dict[str, int]:
        out = dict.fromkeys(labels, 0)
        for t in self.tracks:
            if t.confirmed and t.label in out:
                out[t.label] += 1
        return out

    def update(self, detections: Sequence[Detection], frame_time: float, frame_size: tuple[int, int]) -> TrackerResult:
        """Match one detection run to the tracks; frame_size is (width, height) for the stationary test."""
        self.frame_diag = math.hypot(*frame_size) or 1.0
        result = TrackerResult()
        pairs: list[tuple[float, int, int]] = []
        for ti, t in enumerate(self.tracks):
            for di, d in enumerate(detections):
                if d.label != t.label:
                    continue
                overlap = iou(t.box, (d.x_min, d.y_min, d.x_max, d.y_max))
                if overlap >= self.cfg.iou_threshold:
                    pairs.append((overlap, ti, di))
        # Greedy best-overlap-first assignment.
        pairs.sort(reverse=True)
        used_t: set[int] = set()
        used_d: set[int] = set()
        for _, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            self._hit(self.tracks[ti], detections[di], frame_time, result)
        survivors: list[Track] = []
        for ti, t in enumerate(self.tracks):
            if ti in used_t:
                survivors.append(t)
                continue
            t.misses += 1
            t.best_now = False
            if not t.confirmed:
                continue  # a tentative object that vanished was noise: drop it without a word
            if t.misses >= self.cfg.max_misses:
                t.end_time = frame_time
                result.ended.append(t)
            else:
                survivors.append(t)
        for di, d in enumerate(detections):
            if di not in used_d:
                t = self._new_track(d, frame_time)
                survivors.append(t)
                if t.confirmed:
                    result.new.append(t)
        self.tracks = survivors
        return result

    def end_all(self, when: float) -> list[Track]:
        """The camera went away: every confirmed object ends now."""
        ended = [t for t in self.tracks if t.confirmed]
        for t in ended:
            t.end_time = when
        self.tracks = []
        return ended

    def _new_track(self, d: Detection, frame_time: float) -> Track:
        box = (d.x_min, d.y_min, d.x_max, d.y_max)
        # Ids sort by time and stay unique across restarts, like "<start>-<random>" ids elsewhere.
        t = Track(
            id=f"{frame_time:.6f}-{secrets.token_hex(3)}",
            label=d.label,
            box=box,
            score=d.confidence,
            top_score=d.confidence,
            start_time=frame_time,
            frame_time=frame_time,
        )
        t._anchor = _centre(box)
        t.confirmed = self.cfg.min_hits <= 1
        return t

    def _hit(self, t: Track, d: Detection, frame_time: float, result: TrackerResult) -> None:
        t.box = (d.x_min, d.y_min, d.x_max, d.y_max)
        t.score = d.confidence
        t.frame_time = frame_time
        t.hits += 1
        t.misses = 0
        t.best_now = d.confidence > t.top_score
        if t.best_now:
            t.top_score = d.confidence
        cx, cy = _centre(t.box)
        moved = math.hypot(cx - t._anchor[0], cy - t._anchor[1]) / self.frame_diag
        if moved <= self.cfg.stationary_move:
            t._still_runs += 1
            if t._still_runs >= STATIONARY_RUNS:
                t.stationary = True
        else:
            t._anchor = (cx, cy)
            t._still_runs = 0
            t.stationary = False
        if not t.confirmed and t.hits >= self.cfg.min_hits:
            t.confirmed = True
            result.new.append(t)
        elif t.confirmed:
            result.updated.append(t)
