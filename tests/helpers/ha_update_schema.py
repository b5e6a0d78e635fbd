"""Home Assistant's rules for an MQTT `update` entity, as pydantic models, for checking what the daemon publishes.

From homeassistant/components/mqtt/update.py (PLATFORM_SCHEMA_MODERN / DISCOVERY_SCHEMA, MQTT_JSON_UPDATE_SCHEMA)
and the common MQTT entity schema: the discovery keys an update entity knows, with their types; the state JSON with
exactly the keys Home Assistant accepts (an unknown key, or a null where it wants a string, makes it drop the whole
message). Home Assistant silently drops unknown discovery keys; here they are errors, so a misspelt key is caught.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator, model_validator

_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def _publish_topic(v: str) -> str:
    if not v or any(c in v for c in "+#\0") or len(v.encode()) > 65535:
        raise ValueError(f"not a valid publish topic: {v!r}")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Availability(_Strict):
    topic: StrictStr
    payload_available: StrictStr = "online"
    payload_not_available: StrictStr = "offline"
    value_template: StrictStr | None = None


class Device(_Strict):
    identifiers: list[StrictStr] = Field(min_length=1)
    name: StrictStr | None = None
    manufacturer: StrictStr | None = None
    model: StrictStr | None = None
    sw_version: StrictStr | None = None
    hw_version: StrictStr | None = None
    via_device: StrictStr | None = None
    configuration_url: StrictStr | None = None
    suggested_area: StrictStr | None = None
    serial_number: StrictStr | None = None


class UpdateDiscovery(_Strict):
    unique_id: StrictStr
    device: Device
    state_topic: StrictStr
    name: StrictStr | None = None
    command_topic: StrictStr | None = None
    payload_install: StrictStr | None = None
    device_class: Literal["firmware"] | None = None
    display_precision: Annotated[int, Field(ge=0)] | None = None
    entity_category: Literal["config", "diagnostic"] | None = None
    entity_picture: StrictStr | None = None
    enabled_by_default: StrictBool | None = None
    icon: StrictStr | None = None
    latest_version_template: StrictStr | None = None
    latest_version_topic: StrictStr | None = None
    release_summary: StrictStr | None = None
    release_url: StrictStr | None = None
    retain: StrictBool | None = None
    qos: Literal[0, 1, 2] | None = None
    title: StrictStr | None = None
    value_template: StrictStr | None = None
    json_attributes_topic: StrictStr | None = None
    json_attributes_template: StrictStr | None = None
    availability: list[Availability] | None = None
    availability_mode: Literal["all", "any", "latest"] | None = None
    object_id: StrictStr | None = None
    encoding: StrictStr | None = None

    @field_validator("state_topic", "command_topic")
    @classmethod
    def _topic(cls, v: str | None) -> str | None:
        return None if v is None else _publish_topic(v)

    @model_validator(mode="after")
    def _install_needs_payload(self) -> UpdateDiscovery:
        # Home Assistant publishes payload_install on command_topic: one without the other is useless.
        if (self.command_topic is None) != (self.payload_install is None):
            raise ValueError("command_topic and payload_install go together")
        return self


class UpdateState(_Strict):
    installed_version: StrictStr | None = Field(None, description="leave out when unknown: null is refused")
    latest_version: StrictStr | None = None
    title: StrictStr | None = None
    release_summary: StrictStr | None = None
    release_url: StrictStr | None = None
    entity_picture: StrictStr | None = None
    in_progress: StrictBool | None = None
    update_percentage: Annotated[int, Field(ge=0, le=100)] | None = None


def check_discovery(topic: str, payload: dict[str, object]) -> UpdateDiscovery:
    parts = topic.split("/")
    assert len(parts) == 5 and parts[1] == "update" and parts[4] == "config", topic
    assert _ID.match(parts[2]) and _ID.match(parts[3]), f"ids in {topic} must match [a-zA-Z0-9_-]+"
    return UpdateDiscovery.model_validate(payload)


def check_state(payload: dict[str, object]) -> UpdateState:
    """Home Assistant refuses null for every string key; only update_percentage may be null."""
    for key, value in payload.items():
        if value is None and key != "update_percentage":
            raise AssertionError(f"{key} is null: Home Assistant would drop the whole state message")
    return UpdateState.model_validate(payload)
