"""Camera pieces on their own: config contract, motion gate, tracker, discovery payloads, snapshot rendering, and the
reader against real streams (file://, a hung HTTP MJPEG camera) and picamera2 faked at the vendor-library seam."""

from __future__ import annotations

import re
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from perch.daemon.cameras.config import CameraConfig, MotionConfig, TrackerConfig, parse_cameras
from perch.daemon.cameras.motion import MotionGate
from perch.daemon.cameras.reader import FrameReader
from perch.daemon.cameras.snapshot import render_snapshot
from perch.daemon.cameras.sources import make_source, redact
from perch.daemon.cameras.tracker import IouTracker
from perch.daemon.mqtt.config import MqttConfig, parse_mqtt
from perch.daemon.mqtt.discovery import DeviceInfo, discovery_configs
from perch.daemon.mqtt.identity import BoxIdentity
from perch.daemon.vision.types import Detection

from conftest import IMAGES
from helpers.mjpeg_server import MjpegServer
from helpers.rtsp_server import make_clip

CONTRACT = """
mqtt: {host: 127.0.0.1, port: 1883, topic_prefix: perch}
cameras:
  - name: porch
    url: http://127.0.0.1:8081/stream.mjpg
    detect: {fps: 5, labels: [person, cat, dog], min_score: 0.5}
"""


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip"), IMAGES / "pets.jpg", empty_s=1, object_s=1, after_s=1)


def wait_until(pred: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    return pred()


# ---- config ---------------------------------------------------------------------------------------------------


def test_contract_yaml_parses_with_defaults() -> None:
    raw = yaml.safe_load(CONTRACT)
    mqtt = parse_mqtt(raw["mqtt"])
    assert mqtt is not None and mqtt.topic_prefix == "perch"
    assert BoxIdentity.from_config(mqtt, "Garage").node_id == "perch_garage"
    cams, errors = parse_cameras(raw["cameras"])
    assert errors == []
    (cam,) = cams
    assert cam.detect.labels == ["person", "cat", "dog"] and cam.detect.fps == 5 and cam.detect.min_score == 0.5
    assert cam.motion.enabled and cam.snapshot.enabled and cam.enabled


def test_bad_camera_entries_are_reported_and_the_rest_run() -> None:
    cams, errors = parse_cameras(
        [
            {"name": "ok", "url": "rtsp://cam/stream"},
            {"name": "typo", "url": "rtsp://cam/x", "detect": {"fsp": 3}},
            {"name": "has space", "url": "rtsp://cam/x"},
            {"name": "ok", "url": "rtsp://cam/again"},
            {"name": "ftp", "url": "ftp://cam/x"},
            "not a mapping",
        ]
    )
    assert [c.name for c in cams] == ["ok"]
    by_index = {e.index: e for e in errors}
    assert "detect.fsp: unknown setting" in by_index[1].error
    assert by_index[2].name == "has space" and "name" in by_index[2].error
    assert by_index[3].error == "duplicate camera name"
    assert "unsupported source" in by_index[4].error
    assert by_index[5].name is None


def test_mqtt_section_validation() -> None:
    assert parse_mqtt(None) is None
    assert parse_mqtt({"enabled": False}) is None
    with pytest.raises(ValueError):
        parse_mqtt({"topic_prefix": "perch/#"})
    cfg = parse_mqtt({"password": "s3cret", "username": "u", "tls": {"enabled": True}})
    assert cfg is not None and "s3cret" not in repr(cfg)


def test_credentials_never_shown() -> None:
    assert redact("rtsp://admin:hunter2@10.0.0.5:554/live") == "rtsp://***@10.0.0.5:554/live"
    assert redact("http://cam/stream.mjpg") == "http://cam/stream.mjpg"


# ---- motion gate ----------------------------------------------------------------------------------------------


def _scene(offset: int = 0) -> np.ndarray:
    img = np.full((480, 640, 3), 100, np.uint8)
    cv2.rectangle(img, (100 + offset, 150), (220 + offset, 400), (30, 30, 30), -1)
    return img


def test_motion_gate_still_moving_and_masked() -> None:
    gate = MotionGate(MotionConfig())
    assert gate.update(_scene()) is True  # first frame: nothing to compare with, so look
    noise = np.random.default_rng(0).integers(-6, 7, (480, 640, 3))
    for _ in range(5):
        assert gate.update((_scene().astype(int) + noise).clip(0, 255).astype(np.uint8)) is False
    assert gate.update(_scene(offset=200)) is True

    # The same motion inside a masked area (left half) is ignored.
    masked = MotionGate(MotionConfig(mask=[[(0, 0), (0.5, 0), (0.5, 1), (0, 1)]]))
    masked.update(_scene())
    assert masked.update(_scene(offset=60)) is False
    assert masked.update(_scene(offset=300)) is True  # now it moved into the watched half


# ---- tracker --------------------------------------------------------------------------------------------------


def det(label: str, x: int, score: float = 0.8, y: int = 100) -> Detection:
    return Detection(label, score, x, y, x + 100, y + 200)


def test_tracker_new_update_stationary_end() -> None:
    tr = IouTracker(TrackerConfig(min_hits=2, max_misses=2))
    size = (640, 480)
    assert tr.update([det("dog", 100)], 1.0, size).new == []  # tentative
    r = tr.update([det("dog", 104)], 1.2, size)
    assert len(r.new) == 1
    dog = r.new[0]
    assert tr.counts(["dog", "cat"]) == {"dog": 1, "cat": 0}

    # Still for a few runs: stationary, same id, no new object.
    for i in range(4):
        r = tr.update([det("dog", 104, score=0.9)], 1.4 + i * 0.2, size)
        assert r.new == [] and r.updated == [dog]
    assert dog.stationary and dog.top_score == pytest.approx(0.9)

    # A second label at the same place is a different object; a one-frame blip is never announced.
    r = tr.update([det("dog", 104), det("cat", 300)], 2.4, size)
    assert r.new == []
    r = tr.update([det("dog", 104)], 2.6, size)
    assert [t.label for t in tr.tracks] == ["dog"]

    # Gone for max_misses runs: ended, with an end time.
    assert tr.update([], 2.8, size).ended == []
    r = tr.update([], 3.0, size)
    assert r.ended == [dog] and dog.end_time == 3.0
    assert tr.counts(["dog"]) == {"dog": 0}


def test_tracker_follows_a_moving_object() -> None:
    tr = IouTracker(TrackerConfig(min_hits=1))
    ids = set()
    for i in range(10):
        r = tr.update([det("person", 50 + i * 20)], float(i), (640, 480))
        ids.update(t.id for t in r.new + r.updated)
    assert len(ids) == 1
    assert not tr.tracks[0].stationary


# ---- discovery ------------------------------------------------------------------------------------------------


def test_discovery_configs_are_valid_home_assistant_entities() -> None:
    box = BoxIdentity.from_config(MqttConfig(), "garage")
    cams, _ = parse_cameras(yaml.safe_load(CONTRACT)["cameras"] + [{"name": "drive", "url": "rtsp://x/y"}])
    out = discovery_configs(box, cams, DeviceInfo(model="Rock 5B", sw_version="1.2.3", has_temperature=True))
    ids = set()
    for topic, cfg in out.items():
        assert re.fullmatch(r"homeassistant/(sensor|binary_sensor|image)/perch_garage/[a-zA-Z0-9_-]+/config", topic)
        assert cfg["unique_id"] not in ids
        ids.add(cfg["unique_id"])
        assert cfg["device"]["identifiers"] and cfg["device"]["sw_version"] == "1.2.3"
        assert cfg["availability"][0]["topic"] == "perch/garage/available"
        # An image entity takes exactly one of image_topic / url_topic.
        if "/image/" in topic:
            assert "image_topic" in cfg and "url_topic" not in cfg
        else:
            assert "state_topic" in cfg
    for label in ("person", "cat", "dog"):
        assert f"homeassistant/binary_sensor/perch_garage/porch_{label}_occupancy/config" in out
        count = out[f"homeassistant/sensor/perch_garage/porch_{label}_count/config"]
        assert count["state_topic"] == f"perch/garage/porch/{label}"
    assert "homeassistant/sensor/perch_garage/temperature/config" in out
    assert "homeassistant/sensor/perch_garage/drive_person_count/config" in out  # default label
    assert not any("drive_dog" in t for t in out)


# ---- snapshot -------------------------------------------------------------------------------------------------


def test_snapshot_is_a_jpeg_with_the_box_drawn(clip: Path) -> None:
    from perch.daemon.cameras.config import SnapshotConfig

    frame = cv2.imread(str(clip / "f00020.jpg"))
    jpeg = render_snapshot(frame, (100, 100, 300, 400), "dog", 0.81, SnapshotConfig(quality=90))
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == frame.shape
    assert not np.array_equal(img[100, 150:250], frame[100, 150:250])  # the box edge changed those pixels
    small = render_snapshot(frame, (100, 100, 300, 400), "dog", 0.81, SnapshotConfig(height=240))
    assert cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (240, 320)


# ---- readers on real streams ----------------------------------------------------------------------------------


@pytest.fixture
def mp4(tmp_path: Path, clip: Path) -> Path:
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (640, 480))
    for f in sorted(clip.glob("f*.jpg"))[:15]:
        writer.write(cv2.imread(str(f)))
    writer.release()
    return path


@pytest.fixture
def reader_factory() -> Iterator[Any]:
    readers: list[FrameReader] = []

    def make(**kw: Any) -> FrameReader:
        r = FrameReader(CameraConfig(**{"name": "t", "backoff_min_s": 0.2, "backoff_max_s": 0.5, **kw}))
        readers.append(r)
        r.start()
        return r

    yield make
    for r in readers:
        r.stop()


def test_file_source_plays_at_its_rate_and_loops(reader_factory: Any, mp4: Path) -> None:
    r = reader_factory(url=f"file://{mp4}")
    assert wait_until(lambda: r.online, 5)
    time.sleep(2.2)  # one second of video, looped
    frame = r.latest()
    assert frame is not None and frame.image.shape == (480, 640, 3)
    assert 15 <= frame.seq <= 60  # paced near 15 fps, not decoded flat out, and still going after the end
    assert r.status()["online"] and r.status()["fps"] > 5


def test_missing_source_goes_offline_with_a_reason_and_retries(reader_factory: Any, tmp_path: Path, mp4: Path) -> None:
    target = tmp_path / "later.mp4"
    r = reader_factory(url=f"file://{target}")
    assert wait_until(lambda: r.last_error, 5)
    assert not r.online and "no such file" in (r.last_error or "")
    target.write_bytes(mp4.read_bytes())  # the camera "comes back": the backoff loop finds it
    assert wait_until(lambda: r.online, 5)


def test_hung_mjpeg_camera_trips_the_watchdog_and_recovers(reader_factory: Any, clip: Path) -> None:
    with MjpegServer(clip) as server:
        r = reader_factory(url=server.url, watchdog_s=1.0, open_timeout_s=3)
        assert wait_until(lambda: r.online, 10)
        server.paused.set()  # connection stays open, frames stop: only a watchdog notices
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and r.online:
            r.check_watchdog()
            time.sleep(0.1)
        assert not r.online and "stalled" in (r.last_error or "")
        server.paused.clear()
        assert wait_until(lambda: r.online, 15)
        seq = r.latest().seq  # type: ignore[union-attr]
        assert wait_until(lambda: r.latest().seq > seq + 5, 5)  # type: ignore[union-attr]


def test_picamera2_uses_lores_for_detection_and_main_for_snapshots(
    monkeypatch: pytest.MonkeyPatch, reader_factory: Any
) -> None:
    # picamera2 exists only on a Pi (apt python3-picamera2): fake the vendor module, nothing else.
    calls: dict[str, Any] = {}

    class Request:
        def make_array(self, name: str) -> np.ndarray:
            if name == "lores":  # YUV420 planar: (h * 3/2, w)
                return np.full((240 * 3 // 2, 320), 128, np.uint8)
            return np.full((720, 1280, 3), 50, np.uint8)

        def release(self) -> None:
            calls["released"] = calls.get("released", 0) + 1

    class Picamera2:
        def __init__(self, index: int) -> None:
            calls["index"] = index

        def create_video_configuration(self, **kw: Any) -> dict[str, Any]:
            calls["config"] = kw
            return kw

        def configure(self, cfg: Any) -> None:
            pass

        def start(self) -> None:
            pass

        def capture_request(self) -> Request:
            time.sleep(0.03)
            return Request()

        def stop(self) -> None:
            calls["stopped"] = True

        def close(self) -> None:
            pass

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=Picamera2))
    cfg = dict(url="picamera2://1", width=1280, height=720, lores_width=320, lores_height=240)
    assert type(make_source(CameraConfig(name="pi", **cfg))).__name__ == "PiCamera2Source"
    r = reader_factory(**cfg)
    assert wait_until(lambda: r.online, 5)
    frame = r.latest()
    assert frame is not None and frame.image.shape == (240, 320, 3) and frame.hires is not None
    assert frame.hires.shape == (720, 1280, 3)
    assert calls["index"] == 1 and calls["config"]["lores"] == {"size": (320, 240), "format": "YUV420"}
    assert calls["released"] >= 1
