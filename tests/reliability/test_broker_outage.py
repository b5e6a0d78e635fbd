"""Broker outage: Mosquitto stops for 30 s (PERCHD_OUTAGE_S) while a person walks into a real MJPEG camera's view and
out again. After the broker is back, a subscriber with a persistent session has the `new` and the `end` event, each
once and in order, the retained count is right, and nothing was dropped.

The broker stops as systemd stops it (SIGTERM; it saves its store, as Debian's packaged broker does), so the
subscriber's session survives; the daemon holds the events (QoS 1) in its bounded queue meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import IMAGES, MODELS
from helpers.daemon import Daemon
from helpers.mjpeg_server import MjpegServer
from helpers.mosquitto import Mosquitto, mosquitto_available
from helpers.mqtt_client import Subscriber
from helpers.rtsp_server import make_clip
from helpers.services import needs_service

pytestmark = [pytest.mark.reliability, needs_service(mosquitto_available())]

OUTAGE_S = float(os.environ.get("PERCHD_OUTAGE_S", "30"))
BASE = "perch/shed"


def status(daemon: Daemon) -> dict[str, Any]:
    with urllib.request.urlopen(daemon.url("/v1/status/system-status"), timeout=10) as r:
        return dict(json.loads(r.read()))


async def until(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(pred)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def persons(daemon: Daemon) -> int:
    return int(status(daemon)["cameras"]["driveway"]["objects"].get("person", 0))


async def test_person_comes_and_goes_while_the_broker_is_down(tmp_path: Path) -> None:
    person = make_clip(tmp_path / "person", IMAGES / "squat.bmp", kind="still")
    empty = make_clip(tmp_path / "empty", IMAGES / "squat.bmp", kind="cut", empty_s=1, object_s=0, after_s=0)
    broker = Mosquitto(tmp_path, persistence=True)
    broker.start()
    with MjpegServer(empty) as camera:
        scene = {"empty": list(camera.frames), "person": [p.read_bytes() for p in sorted(person.glob("f*.jpg"))]}
        sub = Subscriber(broker.port, ("perch/#",), client_id="home-assistant", clean_session=False).start()
        config = {"mqtt": {"host": "127.0.0.1", "port": broker.port, "reconnect_min_s": 1, "reconnect_max_s": 2},
                  "cameras": [{"name": "driveway", "url": camera.url,
                               "detect": {"fps": 5, "labels": ["person"], "min_score": 0.5}}]}
        daemon = Daemon(tmp_path / "d", MODELS, name="shed", config=config)
        try:
            daemon.start()
            await sub.wait_for(lambda: [m for m in sub.on(f"{BASE}/driveway/available") if m.text == "online"], 30,
                               "camera online")

            broker.stop(graceful=True)
            down = time.monotonic()
            down_wall = time.time()
            await until(lambda: not status(daemon)["mqtt"]["connected"], 15, "the daemon noticing the outage")
            camera.frames = scene["person"]
            await until(lambda: persons(daemon) == 1, 30, "the person seen")
            camera.frames = scene["empty"]
            await until(lambda: persons(daemon) == 0, 30, "the person gone")
            queued = status(daemon)["mqtt"]["queued_events"]
            await asyncio.sleep(max(0.0, down + OUTAGE_S - time.monotonic()))
            outage = time.monotonic() - down
            broker.start()
            up_wall = time.time()
            ends = await sub.wait_for(lambda: sub.events("end", prefix=BASE), 30, "the end event")
            await asyncio.sleep(1.0)  # anything that would come twice comes now
            mqtt = status(daemon)["mqtt"]
        finally:
            daemon.kill()
            sub.stop()
    try:
        fresh = Subscriber(broker.port, (f"{BASE}/#",), client_id="fresh").start()
        await asyncio.sleep(0.5)
        count = [m.text for m in fresh.on(f"{BASE}/driveway/person")]
        fresh.stop()
    finally:
        broker.stop()

    news = sub.events("new", prefix=BASE)
    print(f"\nbroker outage: {outage:.0f} s; the daemon held {queued} event(s); after the restart the subscriber has "
          f"{len(news)} new and {len(ends)} end; retained count {count}; dropped {mqtt['dropped_events']}")
    assert len(news) == 1 and len(ends) == 1, (news, ends)  # one of each: none lost, none twice
    track = news[0]["after"]["id"]
    assert ends[0]["after"]["id"] == track and ends[0]["after"]["label"] == "person"
    kinds = [e["type"] for e in sub.events(prefix=BASE) if e["after"]["id"] == track]
    assert kinds[0] == "new" and kinds[-1] == "end" and kinds.count("new") == 1, kinds
    assert down_wall <= news[0]["after"]["start_time"] <= up_wall  # it happened during the outage
    assert count == ["0"], count  # retained: nobody there now
    assert mqtt["dropped_events"] == 0 and mqtt["queued_events"] == 0 and mqtt["connects"] == 2, mqtt
