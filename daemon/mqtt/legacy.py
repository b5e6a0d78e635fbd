"""After an upgrade from the single-box topic layout: remove what the old layout left retained on the broker.

Earlier versions published `<prefix>/available`, `<prefix>/stats`, `<prefix>/<camera>/<label>[/snapshot]` and
discovery configs under the node `<prefix>`. With box identities those are nobody's, and Home Assistant would keep
their entities (unavailable) beside the new ones. Clearing the old configs first lets Home Assistant give the new
entities the old entity ids, so dashboards and automations keep working.

Only a layout whose owner is not running is removed: `<prefix>/available` retained `online` means a box on an old
version still serves those topics (a second box was added before the first one was upgraded), and it is left alone.
`<prefix>/<camera>/available` is never cleared: with box identities that topic can be another box's availability.
"""

from __future__ import annotations

import json
import threading

from .config import slug
from .identity import BoxIdentity
from .topics import ONLINE


class LegacyCleanup:
    def __init__(self, box: BoxIdentity) -> None:
        self.prefix = box.topic_prefix
        self.node = slug(box.topic_prefix)
        self.discovery_prefix = box.discovery_prefix
        # An explicit node_id kept its discovery topics across the upgrade; legacy_topics keeps everything.
        self.enabled = not box.legacy and box.node_override is None
        self._lock = threading.Lock()
        self._available: str | None = None
        self._configs: dict[str, bytes] = {}

    @property
    def available_topic(self) -> str:
        return f"{self.prefix}/available"

    def wildcards(self) -> list[str]:
        if not self.enabled:
            return []
        return [self.available_topic, f"{self.discovery_prefix}/+/{self.node}/+/config"]

    def offer(self, topic: str, payload: bytes) -> bool:
        """Record a retained message from the old layout; False when the topic is not one of them."""
        if not self.enabled:
            return False
        head = f"{self.discovery_prefix}/"
        parts = topic[len(head):].split("/") if topic.startswith(head) else []
        with self._lock:
            if topic == self.available_topic:
                self._available = payload.decode(errors="replace").strip()
                return True
            if len(parts) == 4 and parts[1] == self.node and parts[3] == "config":
                if payload:
                    self._configs[topic] = payload
                return True
        return False

    def stale_topics(self) -> list[str]:
        """What to clear (empty retained), once the retained messages have arrived; [] when the old box runs."""
        with self._lock:
            if self._available == ONLINE or not (self._configs or self._available):
                return []
            out = list(self._configs)
            state: set[str] = {self.available_topic, f"{self.prefix}/stats"}
            for raw in self._configs.values():
                try:
                    cfg = json.loads(raw)
                except ValueError:
                    continue
                for key in ("state_topic", "image_topic"):
                    topic = cfg.get(key) if isinstance(cfg, dict) else None
                    if isinstance(topic, str) and topic.startswith(f"{self.prefix}/") and not topic.endswith(
                        "/available"
                    ):
                        state.add(topic)
            self._configs.clear()
            self._available = None
        return out + sorted(state)
