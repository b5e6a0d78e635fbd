"""Home Assistant's MQTT `update` entity for the image (homeassistant/update/<node_id>/firmware/config).

Home Assistant checks the state JSON against a strict schema (its MQTT_JSON_UPDATE_SCHEMA): only the keys below, the
versions and texts as strings (a null there makes it drop the whole message), update_percentage 0..100 or null. So
unknown versions are left out rather than sent as null. Without `update.allow_mqtt_install` the entity has no
command topic: Home Assistant shows it read-only and the daemon does not listen for install commands.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from . import record as rec
from .feed import Release

PAYLOAD_INSTALL = "install"
TITLE = "Perch"
SUMMARY_MAX = 255  # Home Assistant shows no more


class Publisher(Protocol):
    """The part of daemon/mqtt's MqttPublisher this entity uses."""

    @property
    def topics(self) -> Any: ...

    def add_entity(self, component: str, object_id: str, config: dict[str, Any], command_topic: str | None = None,
                   on_command: Callable[[bytes], None] | None = None) -> str: ...

    def retain(self, topic: str, payload: bytes) -> None: ...


def state_topic(prefix: str) -> str:
    return f"{prefix}/update/state"


def command_topic(prefix: str) -> str:
    return f"{prefix}/update/install"


def result_topic(prefix: str) -> str:
    return f"{prefix}/update/result"


def discovery_payload(prefix: str, allow_install: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": "Firmware",
        "device_class": "firmware",
        "entity_category": "config",
        "state_topic": state_topic(prefix),
        "title": TITLE,
    }
    if allow_install:
        payload.update(command_topic=command_topic(prefix), payload_install=PAYLOAD_INSTALL)
    return payload


def _short(text: str) -> str:
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


def release_summary(record: rec.UpdateRecord | None, latest: Release | None, error: str | None) -> str:
    """What the entity's release notes box says: the last update's fate first, else what the feed says."""
    if error:
        return _short(error)
    if record is not None and record.state in (rec.ROLLED_BACK, rec.FAILED, rec.PENDING, rec.INSTALLING):
        when = record.checked or record.finished or record.started
        return _short(f"{record.summary()} ({when})")
    if latest is not None and latest.summary:
        return _short(latest.summary)
    return ""


def state_payload(installed: str | None, latest: Release | None, record: rec.UpdateRecord | None,
                  in_progress: bool, percent: int | None, error: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"title": TITLE}
    if installed is not None:
        out["installed_version"] = installed
    # Without a feed the newest version known is the one installed: Home Assistant then shows "up to date".
    newest = latest.version if latest is not None else installed
    if newest is not None:
        out["latest_version"] = newest
    if latest is not None and latest.notes_url:
        out["release_url"] = latest.notes_url
    out["release_summary"] = release_summary(record, latest, error)
    out["in_progress"] = in_progress
    out["update_percentage"] = None if percent is None else max(0, min(100, int(percent)))
    return out


class UpdateEntity:
    def __init__(self, publisher: Publisher, allow_install: bool, on_install: Callable[[], None]) -> None:
        self.publisher = publisher
        self.prefix: str = publisher.topics.prefix
        self.allow_install = allow_install
        self._on_install = on_install
        self._last: bytes | None = None
        self._last_result: bytes | None = None

    def attach(self) -> str:
        handler = self._command if self.allow_install else None
        return self.publisher.add_entity("update", "firmware", discovery_payload(self.prefix, self.allow_install),
                                         command_topic(self.prefix) if handler else None, handler)

    def _command(self, payload: bytes) -> None:
        # paho's network thread: the callback must only schedule the install.
        if payload.decode(errors="replace").strip().lower() == PAYLOAD_INSTALL:
            self._on_install()

    def publish(self, state: dict[str, Any], result: rec.UpdateRecord | None) -> None:
        body = json.dumps(state, separators=(",", ":")).encode()
        if body != self._last:  # progress arrives per RAUC step; unchanged states are not sent again
            self._last = body
            self.publisher.retain(state_topic(self.prefix), body)
        if result is not None:
            body = json.dumps(result.to_dict(), separators=(",", ":")).encode()
            if body != self._last_result:
                self._last_result = body
                self.publisher.retain(result_topic(self.prefix), body)
