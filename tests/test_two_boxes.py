"""Several boxes on one broker: two real daemons with default settings except their names, each with a camera named
"porch" watching dogs. Their availability, counts, events and Home Assistant entities never mix, and stopping one
makes only its own entities unavailable."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from conftest import IMAGES, MODELS
from helpers.daemon import Daemon
from helpers.mjpeg_server import MjpegServer
from helpers.mosquitto import Mosquitto, mosquitto_available
from helpers.mqtt_client import Msg, Subscriber
from helpers.rtsp_server import make_clip
from helpers.services import needs_service

pytestmark = needs_service(mosquitto_available())

BOXES = ("garage", "attic")


def latest(messages: list[Msg]) -> dict[str, Msg]:
    out: dict[str, Msg] = {}
    for m in messages:
        out[m.topic] = m
    return out


def entity_configs(sub: Subscriber, box: str) -> dict[str, dict[str, Any]]:
    return {t: m.json() for t, m in latest(sub.snapshot()).items()
            if t.startswith("homeassistant/") and f"/perch_{box}/" in t and m.payload}


def available(sub: Subscriber, config: dict[str, Any]) -> bool:
    """What Home Assistant decides from an entity's availability list (mode "all") and the retained states."""
    now = latest(sub.snapshot())
    return all(now[a["topic"]].text == a["payload_available"] for a in config["availability"] if a["topic"] in now)


async def test_two_boxes_share_a_broker_without_clobbering(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip", IMAGES / "pets.jpg", kind="still")
    with Mosquitto(tmp_path) as broker, MjpegServer(clip) as camera:
        sub = Subscriber(broker.port).start()
        config = {"mqtt": {"host": "127.0.0.1", "port": broker.port},
                  "cameras": [{"name": "porch", "url": camera.url, "detect": {"fps": 5, "labels": ["dog"]}}]}
        daemons = {box: Daemon(tmp_path / box, MODELS, name=box, config=config) for box in BOXES}
        try:
            for d in daemons.values():
                d.launch()
            for d in daemons.values():
                d.ready()
            for box in BOXES:
                await sub.wait_for(lambda box=box: sub.events("new", prefix=f"perch/{box}"), 60, f"{box} event")
                await sub.wait_for(lambda box=box: [m for m in sub.on(f"perch/{box}/porch/dog") if m.text != "0"],
                                   30, f"{box} count")
            configs = {box: entity_configs(sub, box) for box in BOXES}
            for box, cfgs in configs.items():
                assert f"homeassistant/binary_sensor/perch_{box}/porch_dog_occupancy/config" in cfgs, sorted(cfgs)
                for cfg in cfgs.values():
                    topics = [a["topic"] for a in cfg["availability"]]
                    assert all(t.startswith(f"perch/{box}/") for t in topics), topics
                    assert cfg.get("state_topic", cfg.get("image_topic", "")).startswith(f"perch/{box}/")
                    assert available(sub, cfg)
            ids = [{c["unique_id"] for c in configs[b].values()} for b in BOXES]
            devices = [{i for c in configs[b].values() for i in c["device"]["identifiers"]} for b in BOXES]
            assert not ids[0] & ids[1] and not devices[0] & devices[1]
            # Each box's events name its own camera; neither box was kicked off the broker by the other.
            for box, d in daemons.items():
                with urllib.request.urlopen(d.url("/v1/status/system-status"), timeout=10) as r:
                    mqtt = json.loads(r.read())["mqtt"]
                assert mqtt["connected"] and mqtt["connects"] == 1 and mqtt["topics"] == f"perch/{box}", mqtt

            assert daemons["garage"].stop(30) == 0
            await sub.wait_for(lambda: sub.on("perch/garage/available")[-1].text == "offline", 10, "garage offline")
            garage, attic = (entity_configs(sub, b) for b in BOXES)
            assert not any(available(sub, c) for c in garage.values())
            assert all(available(sub, c) for c in attic.values())
            assert sub.on("perch/attic/available")[-1].text == "online"
        finally:
            for d in daemons.values():
                d.kill()
            sub.stop()
