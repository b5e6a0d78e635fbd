"""The one Detection type every dialect, the camera loop and MQTT convert from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Detection:
    label: str
    confidence: float  # 0..1
    # Integer pixels of the original image, x_max/y_max exclusive-ish like CodeProject.AI.
    x_min: int
    y_min: int
    x_max: int
    y_max: int

    @property
    def width(self) -> int:
        return self.x_max - self.x_min

    @property
    def height(self) -> int:
        return self.y_max - self.y_min

    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)


def clip_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixels inside the image, 0 <= x_min <= x_max <= width - 1 (same for y): clients crop with them, and a
    negative or out-of-range coordinate breaks face and plate tools and Frigate's normalised boxes."""
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    x1, x2 = (min(max(v, 0), max(width - 1, 0)) for v in (x1, x2))
    y1, y2 = (min(max(v, 0), max(height - 1, 0)) for v in (y1, y2))
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)
