"""This box's identity on a shared broker: one name that goes into topics, the MQTT client id, Home Assistant
discovery topics, unique_ids and device identifiers, so that several boxes on one broker never clobber each other.

The name is the top-level `name` setting (PERCHD_NAME), else the host name. Topic layout (prefix `perch`):

    perch/<box>/available, perch/<box>/events, perch/<box>/stats, perch/<box>/<camera>/<label>[/snapshot], …
    homeassistant/<component>/perch_<box>/<object_id>/config   (unique_id perch_<box>_<object_id>)

`mqtt.legacy_topics: true` keeps the single-box layout of earlier versions (`perch/available`, node `perch`).
Everything that publishes for this box (cameras, the update entity, the dashboard's camera view) takes its topics
and ids from `box_identity(settings)`, so they always agree.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from .config import MqttConfig, parse_mqtt, slug
from .topics import OFFLINE, ONLINE, Topics


def box_id(name: str) -> str:
    """The name as it appears in topics and ids: [a-z0-9_-] (host names and topics are matched case-blind by
    people, not by MQTT; one spelling avoids two boxes that differ only in case)."""
    return slug(name).lower()


@dataclass(frozen=True)
class BoxIdentity:
    name: str  # as configured, or the host name: what Home Assistant shows
    topic_prefix: str = "perch"
    discovery_prefix: str = "homeassistant"
    node_override: str | None = None  # mqtt.node_id
    client_override: str | None = None  # mqtt.client_id
    legacy: bool = False  # mqtt.legacy_topics: the single-box layout

    @property
    def id(self) -> str:
        return box_id(self.name)

    @property
    def base(self) -> str:
        """Topic under which everything of this box lives."""
        return self.topic_prefix if self.legacy else f"{self.topic_prefix}/{self.id}"

    @property
    def topics(self) -> Topics:
        return Topics(self.base)

    @property
    def node_id(self) -> str:
        """The <node_id> of discovery topics and the stem of unique_ids."""
        if self.node_override:
            return slug(self.node_override)
        return slug(self.topic_prefix) if self.legacy else f"{slug(self.topic_prefix)}_{self.id}"

    @property
    def device_id(self) -> str:
        """Home Assistant device identifier of the box (cameras are `<device_id>_<camera>`)."""
        return f"perch_{self.node_id}"

    @property
    def client_id(self) -> str:
        """Stable across restarts and unique per box: a broker disconnects the older of two equal ids."""
        return self.client_override or f"{slug(self.topic_prefix)}-{self.id}"

    def unique_id(self, object_id: str) -> str:
        return f"{self.node_id}_{slug(object_id)}"

    def discovery_topic(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{slug(object_id)}/config"

    @property
    def discovery_wildcard(self) -> str:
        """Every discovery config this box may have published (to find the ones no longer configured)."""
        return f"{self.discovery_prefix}/+/{self.node_id}/+/config"

    def availability(self) -> dict[str, Any]:
        """The `availability` entry every entity of this box carries (retained online/offline, last will)."""
        return {"topic": self.topics.available, "payload_available": ONLINE, "payload_not_available": OFFLINE}

    def device(self, model: str = "perchd", sw_version: str = "0", manufacturer: str = "Perch") -> dict[str, Any]:
        """The box's Home Assistant device entry (entities of the box itself: diagnostics, update)."""
        return {
            "identifiers": [self.device_id],
            "name": self._device_name(),
            "manufacturer": manufacturer,
            "model": model,
            "sw_version": sw_version,
        }

    def _device_name(self) -> str:
        if not self.legacy:
            return f"Perch {self.name}"
        # As earlier versions named it, so an upgrade with legacy_topics changes nothing in Home Assistant.
        return "Perch" if self.node_id == "perch" else f"Perch {self.node_id}"

    @classmethod
    def from_config(cls, cfg: MqttConfig | None, name: str | None = None) -> BoxIdentity:
        cfg = cfg or MqttConfig()
        return cls(
            name=name or socket.gethostname(),
            topic_prefix=cfg.topic_prefix,
            discovery_prefix=cfg.discovery_prefix,
            node_override=cfg.node_id,
            client_override=cfg.client_id,
            legacy=cfg.legacy_topics,
        )


def box_identity(settings: Any) -> BoxIdentity:
    """The identity from the daemon's Settings (or anything with `name` and `mqtt`); defaults when MQTT is off."""
    raw = getattr(settings, "mqtt", None)
    cfg = raw if isinstance(raw, MqttConfig) else parse_mqtt(raw) if raw is not None else None
    return BoxIdentity.from_config(cfg, getattr(settings, "name", None))
