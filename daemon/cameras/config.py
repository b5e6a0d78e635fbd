"""The `cameras:` config section: one entry per stream, validated one by one.

A bad entry is reported with its name and the offending key and is skipped; the other cameras still run
(`parse_cameras` returns both lists so that /v1/status and the log can show what was refused).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

log = logging.getLogger(__name__)

# Camera names end up in MQTT topics and Home Assistant ids, which allow only [a-zA-Z0-9_-].
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "file://", "/dev/video", "picamera2")


class _Section(BaseModel):
    # A misspelt key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class DetectConfig(_Section):
    enabled: bool = True
    # Upper bound on detections per second for this camera (the motion gate usually keeps it far lower).
    fps: float = Field(5.0, gt=0, le=30)
    labels: list[str] = Field(default_factory=lambda: ["person"], min_length=1)
    min_score: float = Field(0.5, ge=0.0, le=1.0)
    # Objects smaller than this fraction of the frame are ignored (distant noise, reflections).
    min_area: float = Field(0.0, ge=0.0, le=1.0)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        out = [s.strip() for s in v if s.strip()]
        for s in out:
            if not NAME_RE.match(s.replace(" ", "_")):
                raise ValueError(f"label {s!r} cannot be used in a topic")
        return list(dict.fromkeys(out))


class MotionConfig(_Section):
    enabled: bool = True
    # Grey-level change (0-255) for a pixel of the downscaled frame to count as moving.
    threshold: int = Field(25, ge=1, le=255)
    # Fraction of the (unmasked) frame that must move to wake the detector.
    min_area: float = Field(0.003, ge=0.0, le=1.0)
    # Width of the grey frame the gate compares; height follows the aspect ratio.
    width: int = Field(160, ge=16, le=1920)
    # Keep detecting this long after the last motion so that objects that stop or leave are seen doing so.
    tail_s: float = Field(2.0, ge=0.0, le=60)
    # With objects in view and no motion, re-check them this often (a still object stays tracked, not re-announced).
    refresh_s: float = Field(5.0, gt=0.0, le=600)
    # Polygons whose pixels never count as motion (trees, a road), as [x, y] fractions 0..1 of width/height.
    mask: list[list[tuple[float, float]]] = Field(default_factory=list)

    @field_validator("mask")
    @classmethod
    def _mask(cls, v: list[list[tuple[float, float]]]) -> list[list[tuple[float, float]]]:
        for poly in v:
            if len(poly) < 3:
                raise ValueError("a mask polygon needs at least 3 points")
            if any(not (0.0 <= c <= 1.0) for pt in poly for c in pt):
                raise ValueError("mask points are fractions of the frame, 0..1")
        return v


class TrackerConfig(_Section):
    iou_threshold: float = Field(0.3, gt=0.0, lt=1.0)
    # Detections in a row before an object is announced (a single-frame false positive stays quiet).
    min_hits: int = Field(2, ge=1, le=30)
    # Detection runs in a row without the object before it ends.
    max_misses: int = Field(4, ge=1, le=100)
    # An update event is sent at most this often per object, and only for a real change.
    update_interval_s: float = Field(5.0, ge=0.0)
    # Box centre moving less than this fraction of the frame diagonal counts as still.
    stationary_move: float = Field(0.02, ge=0.0, le=1.0)


class SnapshotConfig(_Section):
    enabled: bool = True
    quality: int = Field(80, ge=10, le=100)
    draw_boxes: bool = True
    # Scale snapshots down to this height (None = frame size) to keep MQTT messages small.
    height: int | None = Field(None, ge=32, le=4320)
    # A better-scoring frame replaces the published snapshot at most this often.
    min_interval_s: float = Field(2.0, ge=0.0)


class CameraConfig(_Section):
    name: str
    # rtsp://, rtsps://, http(s):// (MJPEG), file://PATH, /dev/videoN (USB, V4L2), picamera2 or picamera2://N (Pi).
    url: str
    enabled: bool = True
    # Shown in Home Assistant; defaults to the name.
    friendly_name: str | None = None
    # Requested capture size / rate for USB and picamera2 sources (network streams send what they send).
    width: int | None = Field(None, ge=16, le=7680)
    height: int | None = Field(None, ge=16, le=4320)
    fps: float | None = Field(None, gt=0, le=120)
    # picamera2: size of the lores stream that feeds detection (main stays at width x height for snapshots).
    lores_width: int = Field(640, ge=16)
    lores_height: int = Field(480, ge=16)
    # FFmpeg demuxer options "key;value|key;value"; None = low-latency defaults for the URL scheme.
    ffmpeg_options: str | None = None
    # file:// sources: start again at the end instead of going offline.
    loop: bool = True
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    # No new frame for this long = stalled: the stream is marked offline and reopened.
    watchdog_s: float = Field(10.0, gt=0, le=600)
    backoff_min_s: float = Field(1.0, gt=0, le=60)
    backoff_max_s: float = Field(30.0, gt=0, le=3600)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    motion: MotionConfig = Field(default_factory=MotionConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("use 1-64 letters, digits, '_' or '-' (the name is part of MQTT topics)")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip()
        if not v.lower().startswith(URL_SCHEMES):
            raise ValueError(f"unsupported source {v!r}; expected one of {', '.join(URL_SCHEMES)}")
        return v

    @model_validator(mode="after")
    def _backoff(self) -> CameraConfig:
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s must be >= backoff_min_s")
        return self

    @property
    def display_name(self) -> str:
        return self.friendly_name or self.name


class CameraConfigError(BaseModel):
    """A refused camera entry: where it was, what it was called, and a sentence saying why."""

    index: int
    name: str | None
    error: str


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        key = ".".join(str(p) for p in err["loc"]) or "(entry)"
        msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{key}: {msg}")
    more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "; ".join(parts) + more


def parse_cameras(raw: list[Any] | None) -> tuple[list[CameraConfig], list[CameraConfigError]]:
    """Validate each entry on its own; duplicates and bad entries are refused, the rest run."""
    good: list[CameraConfig] = []
    bad: list[CameraConfigError] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw or []):
        if isinstance(entry, CameraConfig):
            cam = entry
        else:
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(entry, dict):
                bad.append(CameraConfigError(index=i, name=None, error="each camera must be a mapping"))
                continue
            try:
                cam = CameraConfig.model_validate(entry)
            except ValidationError as exc:
                bad.append(CameraConfigError(index=i, name=str(name) if name else None, error=_describe(exc)))
                continue
        if cam.name in seen:
            bad.append(CameraConfigError(index=i, name=cam.name, error="duplicate camera name"))
            continue
        seen.add(cam.name)
        good.append(cam)
    for b in bad:
        log.error("cameras[%d] (%s) ignored: %s", b.index, b.name or "unnamed", b.error)
    return good, bad
