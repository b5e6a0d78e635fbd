"""The real daemon as a subprocess: `perchd run --port N`, curl-like clients, deepstack-python, and the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import IMAGES, MODELS, free_port


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PERCHD_MODEL_DIR=str(MODELS), PERCHD_STATE_DIR=str(tmp_path / "state"),
               PERCHD_CACHE_DIR=str(tmp_path / "cache"), PERCHD_CONFIG="")
    env.update(extra)
    return env


def _wait_ping(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"daemon exited early: {proc.stderr.read() if proc.stderr else ''}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status/ping", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("daemon not ready in time")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    tmp = tmp_path_factory.mktemp("live")
    port, legacy = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "perch.daemon", "run", "--port", str(port)],
        env=_env(tmp, PERCHD_LEGACY_PORT=str(legacy), PERCHD_HOST="127.0.0.1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_ping(port, proc)
        yield port, legacy
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        # One log line per request: route, status, ms.
        assert "POST /v1/vision/detection 200" in err


def test_curl_style_detection(daemon: tuple[int, int]) -> None:
    port, _ = daemon
    with open(IMAGES / "dog_bicycle_car.jpg", "rb") as fh:
        body = requests.post(f"http://127.0.0.1:{port}/v1/vision/detection", files={"image": fh}, timeout=30).json()
    assert {"dog", "bicycle", "car"} <= {p["label"] for p in body["predictions"]}


def test_deepstack_python_client(daemon: tuple[int, int]) -> None:
    """Home Assistant's deepstack integrations use this library; it must work unchanged on both listeners."""
    from deepstack.core import DeepstackException, DeepstackObject

    for port in daemon:
        dsobject = DeepstackObject(ip="127.0.0.1", port=port, api_key="", timeout=30, min_confidence=0.5)
        predictions = dsobject.detect((IMAGES / "pets.jpg").read_bytes())
        assert [p["label"] for p in predictions][:2] == ["dog", "dog"]
    legacy = DeepstackObject(ip="127.0.0.1", port=daemon[1], api_key="", timeout=30)
    with pytest.raises(DeepstackException):
        legacy.detect(b"not an image")  # DeepStack semantics: HTTP 400, which the client turns into its exception


def test_cli_detect_json_and_text() -> None:
    env = _env(Path("/nonexistent"))
    proc = subprocess.run([sys.executable, "-m", "perch.daemon", "detect", str(IMAGES / "grace_hopper.bmp"),
                           "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["predictions"][0]["label"] == "person"
    proc = subprocess.run([sys.executable, "-m", "perch.daemon", "detect", str(IMAGES / "pets.jpg")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "dog" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "perch.daemon", "detect", str(IMAGES / "SOURCE.txt")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "not an image" in proc.stderr


def test_cli_hardware_json() -> None:
    proc = subprocess.run([sys.executable, "-m", "perch.daemon", "hardware", "--json"], capture_output=True,
                          text=True, timeout=60)
    report = json.loads(proc.stdout)
    cpu = next(a for a in report["accelerators"] if a["kind"] == "cpu")
    assert cpu["present"] and cpu["usable"] and "board" in report


def test_run_without_models_says_how_to_pull(tmp_path: Path) -> None:
    port = free_port()
    env = _env(tmp_path, PERCHD_MODEL_DIR=str(tmp_path / "none"), PERCHD_LEGACY_PORT="0", PERCHD_HOST="127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "perch.daemon", "run", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_ping(port, proc)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "perchd models pull" in err


def test_busy_ports(tmp_path: Path) -> None:
    """A taken legacy port is logged and skipped; a taken main port is one clear error and exit code 1."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        port = free_port()
        env = _env(tmp_path, PERCHD_LEGACY_PORT=str(taken), PERCHD_HOST="127.0.0.1")
        proc = subprocess.Popen([sys.executable, "-m", "perch.daemon", "run", "--port", str(port)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_ping(port, proc)
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=20)
        assert f"cannot listen on 127.0.0.1:{taken} for DeepStack clients" in err
        env = _env(tmp_path, PERCHD_LEGACY_PORT="0", PERCHD_HOST="127.0.0.1")
        proc2 = subprocess.run([sys.executable, "-m", "perch.daemon", "run", "--port", str(taken)], env=env,
                               capture_output=True, text=True, timeout=60)
        assert proc2.returncode == 1
        assert f"cannot listen on 127.0.0.1:{taken}" in proc2.stderr and "Traceback" not in proc2.stderr
