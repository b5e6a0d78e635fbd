"""The `mqtt:` config section (absent = no MQTT; cameras still run and report through /v1/status)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

_SLUG_RE = re.compile(r"[^A-Za-z0-9_-]+")


def slug(text: str) -> str:
    """Home Assistant discovery ids allow only [a-zA-Z0-9_-]."""
    return _SLUG_RE.sub("_", text).strip("_") or "perch"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TlsConfig(_Section):
    enabled: bool = False
    # None = the system trust store.
    ca_certs: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    # Skip host name verification (self-signed broker certificates on a LAN).
    insecure: bool = False


class MqttConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    # None = "<topic_prefix>-<box>" (identity.py): unique per box, stable across restarts (brokers kick duplicates).
    client_id: str | None = None
    topic_prefix: str = "perch"
    # True: the single-box topic layout of earlier versions (<prefix>/available, …, discovery node <prefix>),
    # for one box whose automations read those topics. Two such boxes on one broker need different prefixes.
    legacy_topics: bool = False
    keepalive: int = Field(60, ge=5, le=3600)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    # Home Assistant MQTT discovery.
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    # Groups this box's entities in discovery topics and unique_ids; None = "<topic_prefix>_<box>".
    node_id: str | None = None
    # How often <prefix>/stats is published.
    stats_interval_s: float = Field(60.0, ge=1.0, le=3600)
    # Reconnect delay bounds after a broker loss (paho doubles the delay up to the maximum).
    reconnect_min_s: int = Field(1, ge=1, le=60)
    reconnect_max_s: int = Field(30, ge=1, le=3600)
    # Camera events held while the broker is unreachable, sent in order after the reconnect; beyond this many the
    # oldest are dropped (counted in status and stats, with a warning). 0: events during an outage are dropped.
    event_queue: int = Field(500, ge=0, le=100_000)

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.strip("/")
        if not v or any(c in v for c in "+#") or "\0" in v:
            raise ValueError("a topic prefix must be non-empty and contain no MQTT wildcards")
        return v


def parse_mqtt(raw: object) -> MqttConfig | None:
    """None when MQTT is not configured or disabled; raises pydantic.ValidationError on a bad section."""
    if raw is None:
        return None
    cfg = raw if isinstance(raw, MqttConfig) else MqttConfig.model_validate(raw)
    return cfg if cfg.enabled else None
