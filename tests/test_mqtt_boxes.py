"""MQTT reliability parts against a real Mosquitto: events held through a broker outage (bounded, oldest dropped
first, counted), the box identity in every topic and id, and the clean-up of the single-box layout after an upgrade.
The daemon-level scenarios are in test_two_boxes.py and tests/reliability/."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from perch.daemon.cameras.config import parse_cameras
from perch.daemon.mqtt import publisher
from perch.daemon.mqtt.config import MqttConfig
from perch.daemon.mqtt.discovery import DeviceInfo, discovery_configs
from perch.daemon.mqtt.identity import BoxIdentity, box_identity
from perch.daemon.mqtt.publisher import MqttPublisher

from helpers.mosquitto import Mosquitto, mosquitto_available
from helpers.mqtt_client import Subscriber
from helpers.services import needs_service

pytestmark = needs_service(mosquitto_available())

CAMERAS, _ = parse_cameras([{"name": "porch", "url": "rtsp://cam/x", "detect": {"labels": ["person", "dog"]}}])


def test_two_boxes_never_share_a_topic_or_an_id() -> None:
    a = BoxIdentity.from_config(MqttConfig(), "Garage")
    b = BoxIdentity.from_config(MqttConfig(), "attic")
    ca, cb = (discovery_configs(x, CAMERAS, DeviceInfo()) for x in (a, b))
    assert not ca.keys() & cb.keys()
    assert not {c["unique_id"] for c in ca.values()} & {c["unique_id"] for c in cb.values()}
    devices = [{tuple(c["device"]["identifiers"]) for c in cfgs.values()} for cfgs in (ca, cb)]
    assert not devices[0] & devices[1]
    assert a.client_id != b.client_id and a.client_id == "perch-garage"
    assert a.topics.count("porch", "dog") == "perch/garage/porch/dog" and a.topics.events == "perch/garage/events"
    # Everything of box a names box a's availability topic, nothing of b's.
    assert all(c["availability"][0]["topic"] == "perch/garage/available" for c in ca.values())
    # The prefix is still the user's; the box goes under it.
    assert BoxIdentity.from_config(MqttConfig(topic_prefix="home/vision"), "g").base == "home/vision/g"


def test_identity_defaults_to_the_host_name_and_legacy_keeps_the_old_layout() -> None:
    import socket
    from types import SimpleNamespace

    default = box_identity(SimpleNamespace(name=None, mqtt={"host": "x"}))
    assert default.name == socket.gethostname()
    legacy = BoxIdentity.from_config(MqttConfig(legacy_topics=True), "garage")
    assert legacy.base == "perch" and legacy.node_id == "perch" and legacy.device_id == "perch_perch"
    assert legacy.unique_id("porch_dog_count") == "perch_porch_dog_count"
    assert legacy.device()["name"] == "Perch"
    pinned = BoxIdentity.from_config(MqttConfig(node_id="attic", client_id="cam-attic"), "garage")
    assert pinned.node_id == "attic" and pinned.client_id == "cam-attic" and pinned.base == "perch/garage"


def _event(n: int, kind: str = "new") -> tuple[str, dict[str, object], dict[str, object]]:
    after = {"id": f"t{n}", "camera": "porch", "label": "person"}
    return kind, after, after


async def test_events_held_through_an_outage_oldest_dropped_first(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    broker = Mosquitto(tmp_path, persistence=True)
    broker.start()
    sub = Subscriber(broker.port, ("perch/#",), client_id="outage-sub", clean_session=False).start()
    cfg = MqttConfig(host="127.0.0.1", port=broker.port, event_queue=3, reconnect_min_s=1, reconnect_max_s=1,
                     discovery=False)
    publisher = MqttPublisher(cfg, CAMERAS, identity=BoxIdentity.from_config(cfg, "q"))
    await publisher.start()
    try:
        assert await asyncio.to_thread(publisher.wait_connected, 10)
        publisher.event(*_event(0))
        await sub.wait_for(lambda: sub.events(prefix="perch/q"), 10, "event while connected")

        broker.stop(graceful=True)
        await sub.wait_for(lambda: not publisher.connected, 10, "outage noticed")
        with caplog.at_level(logging.WARNING, logger="perch.daemon.mqtt.publisher"):
            for n in range(1, 6):
                publisher.event(*_event(n, "new" if n % 2 else "end"))
            assert publisher.status()["queued_events"] == 3 and publisher.status()["dropped_events"] == 2
            # One warning per outage, not one per event.
            assert len([r for r in caplog.records if "dropping the oldest" in r.getMessage()]) == 1

            broker.start()  # same port, same store: the subscriber's session is still there
            await sub.wait_for(lambda: len(sub.events(prefix="perch/q")) >= 4, 20, "held events delivered")
            await asyncio.sleep(0.5)
        ids = [e["after"]["id"] for e in sub.events(prefix="perch/q")]
        assert ids == ["t0", "t3", "t4", "t5"], ids  # in order, the two oldest dropped, none twice
        assert publisher.status()["queued_events"] == 0
        assert any("3 event(s) held during the outage; 2 older" in r.getMessage() for r in caplog.records)
    finally:
        await publisher.stop()
        sub.stop()
        broker.stop()


async def test_upgrade_clears_the_single_box_layout_only_when_its_owner_is_gone(tmp_path: Path) -> None:
    with Mosquitto(tmp_path) as broker:
        old = Subscriber(broker.port, client_id="old-layout").start()
        # What an earlier version left: prefix "gone" stopped cleanly, prefix "busy" still runs an old box.
        for prefix, state in (("gone", "offline"), ("busy", "online")):
            old.publish(f"{prefix}/available", state, retain=True)
            old.publish(f"{prefix}/porch/dog", "0", retain=True)
            old.publish(f"homeassistant/sensor/{prefix}/porch_dog_count/config",
                        json.dumps({"state_topic": f"{prefix}/porch/dog", "unique_id": f"{prefix}_porch_dog_count"}),
                        retain=True)
        old.stop()
        publishers = [MqttPublisher(cfg, CAMERAS, identity=BoxIdentity.from_config(cfg, "garage"))
                      for cfg in (MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix=p)
                                  for p in ("gone", "busy"))]
        for p in publishers:
            await p.start()
        try:
            await asyncio.sleep(publisher.CLEANUP_WINDOW_S + 1)  # one clean-up window
            fresh = Subscriber(broker.port, client_id="fresh").start()
            await asyncio.sleep(0.5)
            retained = {m.topic for m in fresh.snapshot() if m.payload}
            fresh.stop()
        finally:
            for p in publishers:
                await p.stop()
    assert not {"gone/available", "gone/porch/dog", "homeassistant/sensor/gone/porch_dog_count/config"} & retained
    assert "homeassistant/sensor/gone_garage/porch_dog_count/config" in retained
    assert {"busy/available", "busy/porch/dog", "homeassistant/sensor/busy/porch_dog_count/config"} <= retained
