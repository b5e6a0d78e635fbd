"""Topic names under the configurable prefix (DESIGN.md §5)."""

from __future__ import annotations

from dataclasses import dataclass

ONLINE = "online"
OFFLINE = "offline"


def label_slug(label: str) -> str:
    """COCO has labels with spaces ("traffic light"); topics and Home Assistant ids use underscores."""
    return label.strip().replace(" ", "_")


@dataclass(frozen=True)
class Topics:
    prefix: str

    @property
    def available(self) -> str:
        """The LWT: retained `online` while connected, `offline` from the broker when the daemon vanishes."""
        return f"{self.prefix}/available"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def stats(self) -> str:
        return f"{self.prefix}/stats"

    def camera_available(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/available"

    def count(self, camera: str, label: str) -> str:
        return f"{self.prefix}/{camera}/{label_slug(label)}"

    def snapshot(self, camera: str, label: str) -> str:
        return f"{self.prefix}/{camera}/{label_slug(label)}/snapshot"
