"""The one Detection type every dialect, the camera loop and MQTT convert from."""

from __future__ import annotations

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
