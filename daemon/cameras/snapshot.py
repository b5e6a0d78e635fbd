"""Snapshot JPEGs: the best frame of an object with its box (and the other boxes of that frame) drawn on."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..vision.types import Detection
from .config import SnapshotConfig

Box = tuple[int, int, int, int]
HIGHLIGHT = (0, 200, 255)  # BGR amber: the object the snapshot is about
OTHER = (200, 200, 200)


def _label(img: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], scale: float) -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    y = max(y, th + base + 2)
    cv2.rectangle(img, (x, y - th - base - 2), (x + tw + 4, y), color, -1)
    cv2.putText(img, text, (x + 2, y - base), font, scale, (0, 0, 0), thick, cv2.LINE_AA)


def render_snapshot(
    frame: np.ndarray,
    box: Box,
    label: str,
    score: float,
    cfg: SnapshotConfig,
    others: Sequence[Detection] = (),
    hires: np.ndarray | None = None,
) -> bytes:
    """JPEG bytes. Boxes are in `frame` pixels; when a full-size `hires` frame exists it is used and boxes scaled."""
    img = (hires if hires is not None else frame).copy()
    sx = img.shape[1] / frame.shape[1]
    sy = img.shape[0] / frame.shape[0]
    if cfg.height is not None and img.shape[0] > cfg.height:
        f = cfg.height / img.shape[0]
        img = cv2.resize(img, (max(1, round(img.shape[1] * f)), cfg.height), interpolation=cv2.INTER_AREA)
        sx, sy = sx * f, sy * f
    if cfg.draw_boxes:
        scale = max(0.4, img.shape[0] / 900)
        thick = max(1, round(img.shape[0] / 300))

        def scaled(b: Box) -> tuple[int, int, int, int]:
            return round(b[0] * sx), round(b[1] * sy), round(b[2] * sx), round(b[3] * sy)

        for d in others:
            b = scaled((d.x_min, d.y_min, d.x_max, d.y_max))
            if b == scaled(box):
                continue
            cv2.rectangle(img, b[:2], b[2:], OTHER, thick)
            _label(img, f"{d.label} {d.confidence:.0%}", b[0], b[1], OTHER, scale)
        b = scaled(box)
        cv2.rectangle(img, b[:2], b[2:], HIGHLIGHT, thick + 1)
        _label(img, f"{label} {score:.0%}", b[0], b[1], HIGHLIGHT, scale)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, cfg.quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
