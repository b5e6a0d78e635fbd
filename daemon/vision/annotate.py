"""Drawing on images for the dialects that answer with a picture (Roboflow format=image, RAYPACK mode=image).

CPU work on whole frames: call these from a worker thread (asyncio.to_thread), never on the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels
Color = tuple[int, int, int]  # BGR

GREEN: Color = (0, 255, 0)
# Distinct colours for classes (BGR), chosen by a stable hash of the label.
PALETTE: tuple[Color, ...] = (
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
    (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
    (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203),
)
FACE_MODES = ("default", "pixel", "fill", "black")

_HEX = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")


def parse_hex(raw: str | None, default: Color = GREEN) -> Color:
    """'#FF0000', 'ff0000' or 'f00' (any case, with or without '#') as a BGR colour; ValueError otherwise."""
    if raw is None or not raw.strip():
        return default
    match = _HEX.fullmatch(raw.strip())
    if not match:
        raise ValueError(f"hex must be a colour like 00ff00 or #FF0000, got {raw!r}")
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    r, g, b = (int(digits[i:i + 2], 16) for i in (0, 2, 4))
    return (b, g, r)


def color_for(label: str) -> Color:
    return PALETTE[sum(label.encode()) % len(PALETTE)]


def _clip(box: Box, width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    return (max(0, min(x1, width - 1)), max(0, min(y1, height - 1)), max(0, min(x2, width)), max(0, min(y2, height)))


def draw_boxes(bgr: np.ndarray, boxes: Sequence[Box], labels: Sequence[str] | None = None,
               colors: Sequence[Color] | None = None, stroke: int = 2) -> np.ndarray:
    """A copy of `bgr` with one rectangle per box, optionally captioned."""
    out = bgr.copy()
    height, width = out.shape[:2]
    stroke = max(1, stroke)
    for i, box in enumerate(boxes):
        color = colors[i] if colors else GREEN
        x1, y1, x2, y2 = _clip(box, width, height)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), color, stroke)
        if labels:
            _caption(out, labels[i], (x1, y1), color)
    return out


def _caption(img: np.ndarray, text: str, corner: tuple[int, int], color: Color) -> None:
    scale = max(0.4, min(img.shape[:2]) / 1000)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = corner
    top = y - th - base - 2 if y - th - base - 2 >= 0 else y
    cv2.rectangle(img, (x, top), (x + tw + 2, top + th + base + 2), color, -1)
    # Dark text on light fills, light text on dark ones.
    ink = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)
    cv2.putText(img, text, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv2.LINE_AA)


def anonymise(bgr: np.ndarray, boxes: Sequence[Box], mode: str, color: Color = GREEN, stroke: int = 2) -> np.ndarray:
    """RAYPACK face modes: default = boxes on the photo, pixel = pixelated faces, fill = filled rectangles,
    black = the boxes alone on black."""
    if mode not in FACE_MODES:
        raise ValueError(f"facemode must be one of {', '.join(FACE_MODES)}, got {mode!r}")
    height, width = bgr.shape[:2]
    if mode == "default":
        return draw_boxes(bgr, boxes, colors=[color] * len(boxes), stroke=stroke)
    if mode == "black":
        return draw_boxes(np.zeros_like(bgr), boxes, colors=[color] * len(boxes), stroke=stroke)
    out = bgr.copy()
    for box in boxes:
        x1, y1, x2, y2 = _clip(box, width, height)
        if x2 <= x1 or y2 <= y1:
            continue
        if mode == "fill":
            cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), color, -1)
        else:
            region = out[y1:y2, x1:x2]
            # About 8 blocks across the face: unrecognisable, still visibly a face-sized area.
            blocks = max(1, (x2 - x1) // 8)
            small = cv2.resize(region, (max(1, (x2 - x1) // blocks), max(1, (y2 - y1) // blocks)),
                               interpolation=cv2.INTER_AREA)
            out[y1:y2, x1:x2] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
    return out


def encode_jpeg(bgr: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
