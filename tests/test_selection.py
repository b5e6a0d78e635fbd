"""Accelerator selection end to end: the daemon picks the model built for the best usable accelerator, warms it,
and falls back to the CPU with the reason in the log, the status routes and `inferenceDevice`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from perch.daemon import autoselect
from perch.daemon.api.common import CODEPROJECT
from perch.daemon.app import create_app
from perch.daemon.config import Settings
from perch.daemon.core import Core

from conftest import REPO, image_bytes

BOARDS = REPO / "tests" / "fixtures" / "boards"
ClientFactory = Callable[..., Awaitable[TestClient]]


def _settings(tmp_path: Path, **kw: object) -> Settings:
    from conftest import MODELS

    return Settings(model_dir=MODELS, state_dir=tmp_path / "s", cache_dir=tmp_path / "c", legacy_port=0,
                    cpu={"workers": 1}, **kw)


async def _detect(client: TestClient) -> dict:
    fd = FormData()
    fd.add_field("image", image_bytes("dog_bicycle_car.jpg"), filename="a.jpg")
    return await (await client.post("/v1/vision/detection", data=fd)).json()


async def test_forced_edgetpu_without_device_falls_back_to_cpu(
    aiohttp_client: ClientFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    core = Core(_settings(tmp_path, accelerator="edgetpu"))
    await core.start()
    try:
        client = await aiohttp_client(create_app(core, CODEPROJECT))
        body = await _detect(client)
        assert body["success"] and body["inferenceDevice"] == "CPU"
        assert {"dog", "bicycle"} <= {p["label"] for p in body["predictions"]}
        status = await (await client.get("/v1/status/system-status")).json()
        model = status["models"][0]
        # The Edge TPU model's CPU twin serves, and status says why the TPU was not used.
        assert model["id"] == "yolov8n" and model["accelerator"] == "cpu"
        assert model["file"].endswith("_cpu_twin.tflite")
        assert any(r.startswith("edgetpu:") and "Coral" in r for r in model["fallbackReasons"])
        assert "falling back" in caplog.text and "edgetpu" in caplog.text
    finally:
        await core.close()


async def test_orangepi5_without_rknnlite_runs_yolox_on_cpu(tmp_path: Path) -> None:
    """The fake RK3588 tree says the NPU is there; rknnlite is not installed here, so loading fails for real."""
    core = Core(_settings(tmp_path, hardware_root=BOARDS / "orangepi5-rk3588s-vendor"))
    await core.start()
    try:
        assert core.hardware.get("rknn") and core.hardware.get("rknn").present
        model = core.registry.loaded["yolox_nano"]
        assert model.kind == "cpu" and model.inference_device == "CPU"
        assert any(r.startswith("rknn") for r in model.fallback_reasons), model.fallback_reasons
        result = await model.detect_bytes(image_bytes("pets.jpg"), 0.5, 50_000_000)
        assert [d.label for d in result.detections] == ["dog", "dog"]
    finally:
        await core.close()


async def test_forced_cpu_on_a_coral_board_chooses_among_the_cpu_models(tmp_path: Path) -> None:
    """`auto` with the TPU forced off picks from the CPU variants only (never the Edge TPU file), by the measurements
    cached for this board: here seeded so that only SSD MobileNet answers one image in under 100 ms."""
    core = Core(_settings(tmp_path, accelerator="cpu", hardware_root=BOARDS / "pi5-coral-usb-x2"))
    seeded = {"ssd_mobilenet_v1": (60.0, 20.0), "yolox_nano": (20.0, 150.0), "yolov8n": (6.0, 400.0)}
    found = autoselect.candidates(core.registry, "cpu")
    assert {m for m, _ in found} == set(seeded)
    autoselect.write_cache(core.settings.cache_dir / autoselect.CACHE_FILE, {
        autoselect.cache_key(core.registry, "cpu", m, sha): {"fps": seeded[m][0], "latency_ms": seeded[m][1]}
        for m, sha in found})
    await core.start()
    try:
        assert list(core.registry.loaded) == ["ssd_mobilenet_v1"]
        assert core.registry.loaded["ssd_mobilenet_v1"].fallback_reasons == []
        assert core.registry.auto.accelerator == "cpu" and core.registry.auto.seconds == 0, "read from the cache"
    finally:
        await core.close()


@pytest.mark.parametrize("board", ["pi5-coral-pcie-nodriver", "x86-plain", "orangepi5-rk3588s-vendor"])
def test_cli_hardware_json_on_fixture(board: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "perch.daemon", "hardware", "--json", "--root",
                           str(BOARDS / board)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [a["kind"] for a in report["accelerators"]][-1] == "cpu"
    for acc in report["accelerators"]:
        assert {"kind", "present", "usable", "reason", "devices"} <= acc.keys()
        assert isinstance(acc["devices"], list) and isinstance(acc["reason"], str)
    assert {"model", "soc"} <= report["board"].keys()
    text = subprocess.run([sys.executable, "-m", "perch.daemon", "hardware", "--root", str(BOARDS / board)],
                          capture_output=True, text=True, timeout=60).stdout
    assert "accelerator" in text and "cpu" in text
