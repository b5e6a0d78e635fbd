"""Acceptance through the real daemon: `perchd run` with PERCHD_CONFIG holding the issue's mqtt + cameras YAML,
a Mosquitto broker and an HTTP MJPEG camera; a plain subscriber sees discovery, availability and events."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from perch.daemon.mqtt.identity import box_id

from conftest import IMAGES, MODELS, free_port
from helpers.mjpeg_server import MjpegServer
from helpers.mosquitto import Mosquitto, mosquitto_available
from helpers.mqtt_client import Subscriber
from helpers.rtsp_server import make_clip
from helpers.services import needs_service

pytestmark = needs_service(mosquitto_available())


def _wait(pred: object, timeout: float, what: str) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()  # type: ignore[operator]
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_perchd_run_publishes_cameras_to_home_assistant(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip", IMAGES / "pets.jpg", kind="cut")
    with Mosquitto(tmp_path) as broker, MjpegServer(clip) as camera:
        sub = Subscriber(broker.port).start()
        # No `name` in the config: the box is known by its host name.
        base = f"perch/{box_id(socket.gethostname())}"
        config = tmp_path / "perchd.yaml"
        # The contract from the issue, with the test's own ports.
        config.write_text(
            f"mqtt: {{host: 127.0.0.1, port: {broker.port}, topic_prefix: perch}}\n"
            "cameras:\n"
            "  - name: porch\n"
            f"    url: {camera.url}\n"
            "    detect: {fps: 5, labels: [person, cat, dog], min_score: 0.5}\n"
        )
        port = free_port()
        env = dict(os.environ, PERCHD_CONFIG=str(config), PERCHD_MODEL_DIR=str(MODELS),
                   PERCHD_STATE_DIR=str(tmp_path / "state"), PERCHD_LEGACY_PORT="0", PERCHD_HOST="127.0.0.1")
        proc = subprocess.Popen([sys.executable, "-m", "perch.daemon", "run", "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _wait(lambda: [m for m in sub.on(f"{base}/available") if m.text == "online"], 60, "availability online")
            configs = [m.json() for m in sub.snapshot()
                       if m.topic.startswith("homeassistant/") and m.topic.endswith("/config") and m.payload]
            assert configs and all("unique_id" in c and ("state_topic" in c or "image_topic" in c) for c in configs)
            assert all("availability" in c or "availability_topic" in c for c in configs)
            new = _wait(lambda: [e for e in sub.events("new") if e["after"]["label"] == "dog"], 60, "a dog event")
            assert new[0]["after"]["camera"] == "porch"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status/system-status", timeout=10) as r:
                status = __import__("json").loads(r.read())
            assert status["cameras"]["porch"]["online"] is True and status["mqtt"]["connected"] is True
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
            sub.stop()
        assert proc.returncode == 0, err
        # On a clean stop the daemon says it is offline (retained), rather than leaving it to the LWT.
        assert sub.on(f"{base}/available")[-1].text == "offline"


def test_bad_mqtt_section_stops_startup_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "perchd.yaml"
    config.write_text("mqtt: {host: 127.0.0.1, port: seventy}\n")
    proc = subprocess.run([sys.executable, "-m", "perch.daemon", "--config", str(config), "run"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "mqtt.port" in proc.stderr
