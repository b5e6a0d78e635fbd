"""Cameras -> detection -> MQTT against real parts: Mosquitto, an RTSP server (GStreamer), an HTTP MJPEG camera and
the real SSD MobileNet model. Assertions are on what a plain MQTT subscriber receives.

The clip (made from the shared pets.jpg photo) loops: 2 s empty scene, 3 s with two dogs, 3 s empty again.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from perch.daemon.cameras.runtime import CameraRuntime, registry_detect, run_cameras
from perch.daemon.cameras.service import DetectFn
from perch.daemon.core import Core

from conftest import IMAGES
from helpers.mjpeg_server import MjpegServer
from helpers.mosquitto import Mosquitto, make_tls, mosquitto_available
from helpers.mqtt_client import Subscriber
from helpers.rtsp_server import RtspServer, make_clip, system_rtsp_available
from helpers.services import needs_service

pytestmark = needs_service(mosquitto_available(), system_rtsp_available())

# Generous: the machine is shared and slow; the waits end as soon as the condition holds.
CYCLE_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip"), IMAGES / "pets.jpg", kind="cut")


@pytest.fixture
def detector(core: Core) -> DetectFn:
    # The daemon's own detection path: default model, scheduler worker pool, camera lane.
    return registry_detect(core.registry)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path) as b:
        yield b


@pytest.fixture
def rtsp(clip: Path) -> Iterator[RtspServer]:
    with RtspServer({"/porch": clip}) as server:
        yield server


@pytest.fixture
def subscriber(broker: Mosquitto) -> Iterator[Subscriber]:
    sub = Subscriber(broker.port).start()
    yield sub
    sub.stop()


def camera(name: str, url: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "url": url,
        "detect": {"fps": 5, "labels": ["person", "cat", "dog"], "min_score": 0.5},
        # Short timings so that a test cycle takes seconds.
        "watchdog_s": 4,
        "backoff_min_s": 0.5,
        "backoff_max_s": 2,
        "open_timeout_s": 5,
        "tracker": {"max_misses": 3, "update_interval_s": 1},
        "snapshot": {"min_interval_s": 0.5},
    }
    entry.update(extra)
    return entry


def cam_settings(port: int, cameras: list[dict[str, Any]], **mqtt: Any) -> SimpleNamespace:
    return SimpleNamespace(
        name="box1",  # the box identity: topics under perch/box1/, discovery node perch_box1
        mqtt={"host": "127.0.0.1", "port": port, "topic_prefix": "perch", "stats_interval_s": 1, **mqtt},
        cameras=cameras,
    )


def configs(sub: Subscriber) -> dict[str, dict[str, Any]]:
    """Latest non-empty discovery config per topic."""
    out: dict[str, dict[str, Any]] = {}
    for m in sub.snapshot():
        if m.topic.startswith("homeassistant/") and m.topic.endswith("/config"):
            if m.payload:
                out[m.topic] = m.json()
            else:
                out.pop(m.topic, None)
    return out


def counts(sub: Subscriber, camera: str, label: str) -> list[int]:
    return [int(m.text) for m in sub.on(f"perch/box1/{camera}/{label}")]


@pytest.fixture
async def daemon_factory(detector: DetectFn) -> AsyncIterator[Any]:
    stack: list[Any] = []

    async def start(cfg: SimpleNamespace) -> CameraRuntime:
        cm = run_cameras(cfg, detector)
        runtime = await cm.__aenter__()
        stack.append(cm)
        return runtime

    yield start
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


async def test_rtsp_and_mjpeg_cameras_to_home_assistant(
    broker: Mosquitto, rtsp: RtspServer, clip: Path, subscriber: Subscriber, daemon_factory: Any
) -> None:
    with MjpegServer(clip) as mjpeg:
        cfg = cam_settings(
            broker.port,
            [
                camera("porch", rtsp.url("/porch")),
                camera("yard", mjpeg.url),
                {"name": "bad camera!", "url": "ftp://nowhere"},  # refused, and must not stop the others
            ],
        )
        runtime = await daemon_factory(cfg)
        sub = subscriber

        # Availability (LWT topic) and discovery.
        await sub.wait_for(lambda: [m for m in sub.on("perch/box1/available") if m.text == "online"], 10, "online")
        wanted = {
            "homeassistant/binary_sensor/perch_box1/porch_dog_occupancy/config",
            "homeassistant/sensor/perch_box1/porch_person_count/config",
            "homeassistant/image/perch_box1/yard_dog_snapshot/config",
            "homeassistant/sensor/perch_box1/yard_fps/config",
            "homeassistant/sensor/perch_box1/inference_ms/config",
        }
        cfgs = await sub.wait_for(lambda: configs(sub) if wanted <= configs(sub).keys() else None, 10, "discovery")
        for topic, payload in cfgs.items():
            assert re.fullmatch(r"homeassistant/(sensor|binary_sensor|image)/perch_box1/[A-Za-z0-9_-]+/config", topic)
            assert payload["unique_id"]
            assert "state_topic" in payload or "image_topic" in payload
            assert "availability" in payload or "availability_topic" in payload
            assert payload["device"]["identifiers"]
        occ = cfgs["homeassistant/binary_sensor/perch_box1/porch_dog_occupancy/config"]
        assert occ["state_topic"] == "perch/box1/porch/dog"
        assert {"topic": "perch/box1/available", "payload_available": "online", "payload_not_available": "offline"} in (
            occ["availability"]
        )
        snapshot_cfg = cfgs["homeassistant/image/perch_box1/yard_dog_snapshot/config"]
        assert snapshot_cfg["image_topic"] == "perch/box1/yard/dog/snapshot"
        assert "homeassistant/sensor/perch_box1/inference_ms/config" in cfgs
        assert not any("bad" in t for t in cfgs)
        assert runtime.status()["cameras"]["bad camera!"]["status"] == "invalid"

        # A `new` event with the right label, from each source.
        for cam in ("porch", "yard"):
            new = await sub.wait_for(
                lambda cam=cam: [e for e in sub.events("new") if e["after"]["camera"] == cam],
                CYCLE_TIMEOUT,
                f"{cam} new",
            )
            after = new[0]["after"]
            assert after["label"] == "dog"
            assert after["score"] >= 0.5 and after["has_snapshot"] is True
            x1, y1, x2, y2 = after["box"]
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480

        # Snapshot: a decodable JPEG of the frame, published before the event that says it exists.
        snap = await sub.wait_for(lambda: sub.on("perch/box1/porch/dog/snapshot"), 5, "snapshot")
        img = cv2.imdecode(np.frombuffer(snap[-1].payload, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[:2] == (480, 640)

        # Counts rise (two dogs in the clip) and fall back to zero; an `end` event when they leave.
        await sub.wait_for(lambda: max(counts(sub, "porch", "dog"), default=0) >= 1, CYCLE_TIMEOUT, "count up")
        await sub.wait_for(
            lambda: [e for e in sub.events("end") if e["after"]["camera"] == "porch"], CYCLE_TIMEOUT, "end event"
        )
        seq = counts(sub, "porch", "dog")
        assert seq[0] == 0 and max(seq) >= 1 and seq[-1] == 0, seq
        end = next(e for e in sub.events("end") if e["after"]["camera"] == "porch")
        assert end["after"]["end_time"] >= end["after"]["start_time"]
        assert end["before"]["id"] == end["after"]["id"]
        # Objects that stay still are not announced again: one `new` per dog and pass of the clip.
        news = [e for e in sub.events("new") if e["after"]["camera"] == "porch"]
        ends = [e for e in sub.events("end") if e["after"]["camera"] == "porch"]
        assert len(news) <= len(ends) + 2

        # Stats and camera status.
        stats = await sub.wait_for(lambda: sub.on("perch/box1/stats"), 5, "stats")
        body = stats[-1].json()
        assert body["cameras"]["porch"]["online"] is True
        assert body["cameras"]["porch"]["fps"] > 0
        assert [m.text for m in sub.on("perch/box1/porch/available")][-1] == "online"


async def test_removed_camera_loses_its_entities_and_ha_birth_republishes(
    broker: Mosquitto, rtsp: RtspServer, subscriber: Subscriber, daemon_factory: Any
) -> None:
    sub = subscriber
    two = cam_settings(broker.port, [camera("porch", rtsp.url("/porch")), camera("garage", "rtsp://127.0.0.1:9/x")])
    first = run_cameras(two, _no_detect)
    await first.__aenter__()
    await sub.wait_for(lambda: "homeassistant/sensor/perch_box1/garage_dog_count/config" in configs(sub), 10, "garage")
    await first.__aexit__(None, None, None)

    # Restart with the garage camera removed from the config.
    await daemon_factory(cam_settings(broker.port, [camera("porch", rtsp.url("/porch"))]))
    await sub.wait_for(
        lambda: not any("garage" in t for t in configs(sub)), 10, "garage entities cleared (empty retained configs)"
    )
    assert "homeassistant/sensor/perch_box1/porch_dog_count/config" in configs(sub)
    # A fresh subscriber (what Home Assistant sees after a restart) gets no retained garage topic at all.
    fresh = Subscriber(broker.port, client_id="fresh").start()
    try:
        await asyncio.sleep(0.3)
        assert not [m for m in fresh.snapshot() if "garage" in m.topic and m.payload]
        assert [m for m in fresh.snapshot() if m.topic.endswith("porch_dog_count/config")]
    finally:
        fresh.stop()

    # Home Assistant's birth message makes the daemon publish discovery again.
    before = len([m for m in sub.snapshot() if m.topic.endswith("porch_dog_count/config")])
    sub.publish("homeassistant/status", "online")
    await sub.wait_for(
        lambda: len([m for m in sub.snapshot() if m.topic.endswith("porch_dog_count/config")]) > before,
        10,
        "discovery after HA birth",
    )


async def _no_detect(frame: np.ndarray) -> list[Any]:
    return []


async def test_broker_restart_reconnects_and_republishes(
    tmp_path: Path, rtsp: RtspServer, detector: DetectFn, daemon_factory: Any
) -> None:
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        cfg = cam_settings(broker.port, [camera("porch", rtsp.url("/porch"))], reconnect_min_s=1, reconnect_max_s=2)
        runtime = await daemon_factory(cfg)
        assert runtime.publisher is not None
        sub = Subscriber(broker.port).start()
        await sub.wait_for(lambda: runtime.publisher.connects == 1 and sub.on("perch/box1/available"), 10, "connected")
        await sub.wait_for(lambda: runtime.status()["cameras"]["porch"]["online"], 15, "camera online")
        sub.stop()

        broker.stop()  # the broker dies; retained state is lost (no persistence)
        await sub.wait_for(lambda: not runtime.publisher.connected, 10, "disconnect noticed")
        await asyncio.sleep(1.0)
        assert runtime.status()["cameras"]["porch"]["online"] is True  # camera loop unaffected

        broker.start()  # same port
        sub2 = Subscriber(broker.port, client_id="after-restart").start()
        try:
            await sub2.wait_for(lambda: runtime.publisher.connects >= 2, 20, "reconnect")
            await sub2.wait_for(
                lambda: [m for m in sub2.on("perch/box1/available") if m.text == "online"], 10, "availability again"
            )
            await sub2.wait_for(
                lambda: "homeassistant/binary_sensor/perch_box1/porch_dog_occupancy/config" in configs(sub2),
                10,
                "discovery",
            )
            await sub2.wait_for(lambda: sub2.on("perch/box1/porch/dog"), 10, "retained counts again")
            # Events flow on the new connection.
            await sub2.wait_for(lambda: sub2.events("new"), CYCLE_TIMEOUT, "events after reconnect")
        finally:
            sub2.stop()
    finally:
        broker.stop()


async def test_rtsp_server_killed_and_restarted(
    broker: Mosquitto, clip: Path, subscriber: Subscriber, daemon_factory: Any
) -> None:
    sub = subscriber
    server = RtspServer({"/porch": clip})
    server.start()
    try:
        runtime = await daemon_factory(cam_settings(broker.port, [camera("porch", server.url("/porch"))]))
        await sub.wait_for(lambda: sub.events("new"), CYCLE_TIMEOUT, "first new event")

        assert sub.on("perch/box1/porch/available")[-1].text == "online"
        server.stop()  # the camera loses power
        await sub.wait_for(lambda: sub.on("perch/box1/porch/available")[-1].text == "offline", 15, "camera offline")
        assert runtime.status()["cameras"]["porch"]["online"] is False
        assert runtime.status()["cameras"]["porch"]["last_error"]
        assert counts(sub, "porch", "dog")[-1] == 0  # nothing is "seen" by a dead camera
        n_new = len(sub.events("new"))

        server.start()  # same port
        await sub.wait_for(lambda: sub.on("perch/box1/porch/available")[-1].text == "online", 20, "camera back online")
        await sub.wait_for(lambda: len(sub.events("new")) > n_new, CYCLE_TIMEOUT, "events resume")
        assert runtime.status()["cameras"]["porch"]["reconnects"] >= 1
    finally:
        server.stop()


async def test_tls_and_password(tmp_path: Path, daemon_factory: Any) -> None:
    tls = make_tls(tmp_path)
    with Mosquitto(tmp_path, tls=tls, users={"perch": "s3cret"}) as broker:
        sub = Subscriber(broker.port, tls_ca=tls.ca, username="perch", password="s3cret").start()
        try:
            secure = {"tls": {"enabled": True, "ca_certs": str(tls.ca)}, "username": "perch"}
            runtime = await daemon_factory(cam_settings(broker.port, [], password="s3cret", **secure))
            await sub.wait_for(lambda: [m for m in sub.on("perch/box1/available") if m.text == "online"], 10, "online")
            assert runtime.publisher is not None and runtime.publisher.connected

            wrong = await daemon_factory(
                cam_settings(broker.port, [], password="wrong", client_id="intruder", **secure)
            )
            assert wrong.publisher is not None
            await sub.wait_for(lambda: "refused" in (wrong.publisher.last_error or ""), 10, "refusal reported")
            assert not wrong.publisher.connected
        finally:
            sub.stop()


async def test_event_on_the_wire_has_the_contract_fields(broker: Mosquitto, subscriber: Subscriber) -> None:
    """The contract the acceptance checks read (type, after.label, after.camera), as the broker delivers what the
    real publisher sent for a real track."""
    from perch.daemon.cameras.tracker import Track
    from perch.daemon.mqtt.config import parse_mqtt
    from perch.daemon.mqtt.publisher import MqttPublisher

    t = Track(id="1-a", label="dog", box=(1, 2, 3, 4), score=0.8, top_score=0.9, start_time=1.0, frame_time=2.0)
    cfg = parse_mqtt({"host": "127.0.0.1", "port": broker.port, "topic_prefix": "perch", "discovery": False})
    assert cfg is not None
    publisher = MqttPublisher(cfg, [])
    await publisher.start()
    try:
        assert await asyncio.to_thread(publisher.wait_connected, 10)
        publisher.event("new", t.payload("porch"), t.payload("porch"))
        events = await subscriber.wait_for(lambda: subscriber.events("new"), 10, "the event")
    finally:
        await publisher.stop()
    event = events[0]
    assert event["type"] == "new" and event["after"]["label"] == "dog" and event["after"]["camera"] == "porch"
    assert event["before"] == event["after"] == json.loads(json.dumps(t.payload("porch")))
    assert event["after"]["id"] == "1-a" and event["after"]["top_score"] == 0.9
