"""Home Assistant's `update` entity against a real Mosquitto and real RAUC: discovery valid for Home Assistant, the
state published, install commands ignored unless allowed, an install from the release feed with its progress and
result, and a rollback after the reboot reported on the entity."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from perch.daemon.mqtt.config import MqttConfig
from perch.daemon.mqtt.discovery import DeviceInfo
from perch.daemon.mqtt.identity import BoxIdentity
from perch.daemon.mqtt.publisher import MqttPublisher
from perch.daemon.update import record as rec
from perch.daemon.update.service import UpdateService

from conftest import MODELS, free_port
from helpers import rauc_fixtures
from helpers.ha_update_schema import check_discovery, check_state
from helpers.mosquitto import Mosquitto, mosquitto_available
from helpers.mqtt_client import Msg, Subscriber
from helpers.rauc_fixtures import Bundles, file_server, needs_rauc, update_settings
from helpers.rauc_system import RaucSystem

# Fixtures shared with the other update tests, used by name.
keys, bundles, rauc = rauc_fixtures.keys, rauc_fixtures.bundles, rauc_fixtures.rauc

pytestmark = [needs_rauc, pytest.mark.skipif(bool(mosquitto_available()), reason=str(mosquitto_available()))]

# The box is named "box1": its topics are under perch/box1/, its discovery node is perch_box1.
CONFIG = "homeassistant/update/perch_box1/firmware/config"
STATE = "perch/box1/update/state"
RESULT = "perch/box1/update/result"
COMMAND = "perch/box1/update/install"
WAIT = 30.0  # generous: the machine is shared; every wait ends as soon as its condition holds


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path) as b:
        yield b


@pytest.fixture
def sub(broker: Mosquitto) -> Iterator[Subscriber]:
    s = Subscriber(broker.port, topics=("homeassistant/#", "perch/#")).start()
    yield s
    s.stop()


class Daemon:
    """The update service with the daemon's MQTT publisher, as run_daemon wires them."""

    def __init__(self, settings: Any, port: int) -> None:
        self.service = UpdateService(settings)
        cfg = MqttConfig(host="127.0.0.1", port=port, reconnect_min_s=1)
        self.publisher = MqttPublisher(cfg, [], DeviceInfo(model="test board", sw_version="0.1.0"),
                                       identity=BoxIdentity.from_config(cfg, "box1"))

    async def start(self) -> Daemon:
        # As in the daemon: the entity is added right after the publisher starts connecting.
        await self.service.start()
        await self.publisher.start()
        self.service.attach_mqtt(self.publisher)
        assert await asyncio.to_thread(self.publisher.wait_connected, WAIT)
        return self

    async def stop(self) -> None:
        await self.service.stop()
        await self.publisher.stop()


@pytest.fixture
async def daemons() -> AsyncIterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        await d.stop()


def states(sub: Subscriber, since: int = 0) -> list[dict[str, Any]]:
    # An empty payload clears a retained state (Home Assistant ignores it): not a state.
    return [m.json() for m in sub.snapshot()[since:] if m.topic == STATE and m.payload]


def last(sub: Subscriber, topic: str) -> Msg | None:
    found = sub.on(topic)
    return found[-1] if found else None


async def test_read_only_entity_ignores_install_commands(tmp_path: Path, rauc: RaucSystem, broker: Mosquitto,
                                                         sub: Subscriber, daemons: list[Daemon]) -> None:
    d = await Daemon(update_settings(tmp_path, rauc), broker.port).start()
    daemons.append(d)
    config = await sub.wait_for(lambda: last(sub, CONFIG), WAIT, "update entity discovery")
    entity = check_discovery(CONFIG, config.json())
    assert entity.command_topic is None and entity.payload_install is None
    assert entity.unique_id == "perch_box1_firmware" and entity.device_class == "firmware"
    # The same device as the box's other entities, and the same availability.
    inference = await sub.wait_for(lambda: last(sub, "homeassistant/sensor/perch_box1/inference_ms/config"), WAIT,
                                   "sensor")
    assert config.json()["device"] == inference.json()["device"]
    assert config.json()["availability"] == inference.json()["availability"]

    late = Subscriber(broker.port, topics=(CONFIG, STATE), client_id="late").start()  # Home Assistant restarting
    try:
        assert await sub.wait_for(lambda: {m.topic for m in late.snapshot() if m.retain} == {CONFIG, STATE}, WAIT,
                                  "retained config and state")
    finally:
        late.stop()
    state = (await sub.wait_for(lambda: last(sub, STATE), WAIT, "update state")).json()
    check_state(state)
    # No feed: the newest version known is the one running, so Home Assistant shows "up to date".
    assert state["installed_version"] == state["latest_version"] == "1.0.0" and state["in_progress"] is False

    seen = len(sub.snapshot())
    sub.publish(COMMAND, "install")
    await asyncio.sleep(1.0)  # nothing may happen: give a wrong implementation the chance to show itself
    assert not (tmp_path / "state" / rec.RECORD_FILE).exists() and rauc.slot_bytes("B", 4096) == b"\0" * 4096
    assert not any(s.get("in_progress") for s in states(sub, seen))


async def test_install_from_home_assistant_then_rollback_reported(
        tmp_path: Path, rauc: RaucSystem, bundles: Bundles, broker: Mosquitto, sub: Subscriber,
        daemons: list[Daemon], aiohttp_server: Any) -> None:
    sha = hashlib.sha256(bundles.good.read_bytes()).hexdigest()
    feed = {"releases": [{"version": "1.5.0", "url": "old.raucb"},
                         {"version": "2.0.0", "url": "perch-2.0.0-arm64.raucb", "sha256": sha,
                          "notes_url": "notes/2.0.0.html", "summary": "Faster faces", "published": "2026-12-01"}]}
    server = await file_server(aiohttp_server, {"feed.json": json.dumps(feed).encode(),
                                                "perch-2.0.0-arm64.raucb": bundles.good})
    settings = update_settings(tmp_path, rauc, feed_url=str(server.make_url("/feed.json")), allow_mqtt_install=True)
    d = await Daemon(settings, broker.port).start()
    daemons.append(d)
    entity = check_discovery(CONFIG, (await sub.wait_for(lambda: last(sub, CONFIG), WAIT, "discovery")).json())
    assert entity.command_topic == COMMAND and entity.payload_install == "install"
    offered = await sub.wait_for(lambda: [s for s in states(sub) if s.get("latest_version") == "2.0.0"], WAIT,
                                 "the feed's release offered")
    assert offered[-1]["installed_version"] == "1.0.0"
    assert offered[-1]["release_url"] == str(server.make_url("/notes/2.0.0.html"))
    assert offered[-1]["release_summary"] == "Faster faces"

    seen = len(sub.snapshot())
    sub.publish(COMMAND, "install")
    await sub.wait_for(lambda: [s for s in states(sub, seen) if not s["in_progress"]], 60, "the install to end")
    during = states(sub, seen)
    for s in during:
        check_state(s)
    progress = [s["update_percentage"] for s in during if s["in_progress"]]
    assert len(progress) >= 3 and progress == sorted(progress) and 0 < max(progress) <= 100
    final = during[-1]
    assert final["update_percentage"] is None
    assert final["release_summary"].startswith("2.0.0 installed into rootfs.1; it starts after a reboot")
    result = (await sub.wait_for(lambda: last(sub, RESULT), WAIT, "result")).json()
    assert result["state"] == rec.PENDING and result["target_version"] == "2.0.0"
    assert rauc.slot_bytes("B") == bundles.good_image

    # The new version does not start: the boot loader falls back to A; the daemon there tells Home Assistant.
    await d.stop()
    daemons.remove(d)
    rauc.record_installed("B", "2.0.0")
    rauc.reboot(into="A")
    seen = len(sub.snapshot())
    daemons.append(await Daemon(settings, broker.port).start())
    back = await sub.wait_for(lambda: [s for s in states(sub, seen)
                                       if s["release_summary"].startswith("rolled back")], WAIT, "rollback state")
    check_state(back[-1])
    assert back[-1]["release_summary"].startswith("rolled back: 2.0.0 did not start, running 1.0.0")
    assert back[-1]["installed_version"] == "1.0.0" and back[-1]["latest_version"] == "2.0.0"
    result = await sub.wait_for(lambda: [m.json() for m in sub.snapshot()[seen:] if m.topic == RESULT and m.payload
                                         and m.json()["state"] == rec.ROLLED_BACK], WAIT, "rollback result")
    assert result[-1]["result"] == "rolled back"


async def test_a_garbage_feed_is_shown_on_the_entity(tmp_path: Path, rauc: RaucSystem, broker: Mosquitto,
                                                     sub: Subscriber, daemons: list[Daemon],
                                                     aiohttp_server: Any) -> None:
    server = await file_server(aiohttp_server, {"feed.json": b"<html>Bad gateway</html>"})
    settings = update_settings(tmp_path, rauc, feed_url=str(server.make_url("/feed.json")), allow_mqtt_install=True)
    d = await Daemon(settings, broker.port).start()
    daemons.append(d)
    await sub.wait_for(lambda: last(sub, STATE), WAIT, "state")
    seen = len(sub.snapshot())
    sub.publish(COMMAND, "install")
    failed = await sub.wait_for(lambda: [s for s in states(sub, seen) if "not a valid release index" in
                                         s["release_summary"] and not s["in_progress"]], WAIT, "the feed error")
    check_state(failed[-1])
    assert not (tmp_path / "state" / rec.RECORD_FILE).exists()  # nothing was installed, nothing recorded
    assert d.publisher.connected


def test_perchd_run_reports_a_rollback_at_start(tmp_path: Path, rauc: RaucSystem, broker: Mosquitto,
                                                sub: Subscriber) -> None:
    """The wiring in the real daemon: `perchd run` after a reboot that fell back to the old slot."""
    state = tmp_path / "state"
    rec.save(state, rec.UpdateRecord(state=rec.PENDING, target_slot="rootfs.1", target_bootname="B",
                                     target_version="2.0.0", from_slot="rootfs.0", from_bootname="A",
                                     from_version="1.0.0", source="perch-2.0.0-arm64.raucb", started=rec.now(),
                                     boot_id="the boot before", finished=rec.now()))
    config = tmp_path / "perchd.yaml"
    config.write_text(f"name: box1\nmqtt: {{host: 127.0.0.1, port: {broker.port}}}\n"
                      f"update: {{release_file: {rauc.release_file}}}\n")
    port = free_port()
    env = dict(os.environ, **rauc.env, PERCHD_CONFIG=str(config), PERCHD_MODEL_DIR=str(MODELS),
               PERCHD_STATE_DIR=str(state), PERCHD_LEGACY_PORT="0", PERCHD_HOST="127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "perch.daemon", "run", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        back = wait_sync(lambda: [s for s in states(sub) if s["release_summary"].startswith("rolled back")], 90,
                         "rollback on the entity")
        assert back[-1]["release_summary"].startswith("rolled back: 2.0.0 did not start, running 1.0.0")
        assert check_discovery(CONFIG, last(sub, CONFIG).json()).command_topic is None  # type: ignore[union-attr]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status/update", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["success"] and body["update"]["last_update"]["result"] == "rolled back"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "update: rolled back: 2.0.0 did not start, running 1.0.0" in err  # and in the log


def wait_sync(pred: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
