"""Non-CPU serving through the whole daemon: the real probe (fake board trees), registry, scheduler and routes,
with thin stand-ins only at the vendor-library seam (tests/helpers/standins.py). The stand-ins compute what the real
CPU model computes, so the boxes in the HTTP answer must equal the CPU pipeline's.

And the accelerator-fault failover (daemon/failover.py): a stand-in that starts raising moves requests to the
model's CPU twin with no client error, the model is marked degraded with the reason, and the accelerator is taken
back once it answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from perch.accelerators.base import OpenOptions, get_backend
from perch.daemon import failover
from perch.daemon.__main__ import main as perchd
from perch.daemon.api.common import CODEPROJECT, DEEPSTACK
from perch.daemon.app import create_app
from perch.daemon.cameras.runtime import registry_detect, registry_stats, run_cameras
from perch.daemon.config import Settings
from perch.daemon.core import Core
from perch.daemon.manifest import load_labels, load_manifest, resolve
from perch.daemon.vision.detect import Detector

from conftest import MODELS, REPO, image_bytes
from helpers import standins
from helpers.mosquitto import Mosquitto, mosquitto_available
from helpers.mqtt_client import Subscriber
from helpers.services import needs_service

BOARDS = REPO / "tests" / "fixtures" / "boards"
PHOTO = "dog_bicycle_car.jpg"
YOLOX_ONNX = MODELS / "detection" / "yolox_nano.onnx"
YOLOV8_TWIN = MODELS / "edgetpu" / "yolov8n_full_integer_quant_cpu_twin.tflite"


def board_settings(tmp: Path, board: str, model_dir: Path = MODELS) -> Settings:
    return Settings(model_dir=model_dir, state_dir=tmp / "state", cache_dir=tmp / "cache", legacy_port=0,
                    cpu={"workers": 1}, hardware_root=BOARDS / board)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Core, TestClient, TestClient]]:
    """A started Core and clients of both listeners."""
    core = Core(settings)
    await core.start()
    try:
        async with TestClient(TestServer(create_app(core, CODEPROJECT))) as cp, \
                TestClient(TestServer(create_app(core, DEEPSTACK))) as ds:
            yield core, cp, ds
    finally:
        await core.close()


async def detect(client: TestClient, photo: bytes | None = None, status: int = 200) -> dict[str, Any]:
    fd = FormData()
    fd.add_field("image", photo if photo is not None else image_bytes(PHOTO), filename="a.jpg")
    resp = await client.post("/v1/vision/detection", data=fd)
    assert resp.status == status, await resp.text()
    assert resp.headers.get("Content-Length")
    return dict(await resp.json())


@cache
def cpu_reference(model_id: str) -> list[tuple[str, float, tuple[int, int, int, int]]]:
    """The photo through the daemon's pipeline on the model's CPU variant (no stand-in anywhere)."""
    manifest = load_manifest()
    entry = manifest.models[model_id]
    variant = next(v for v in entry.variants if v.accelerator == "cpu")
    path = resolve(MODELS, variant)
    session = get_backend("cpu_onnx" if path.suffix == ".onnx" else "cpu_tflite").open(path, OpenOptions())
    assert entry.input is not None and entry.decoder is not None
    det = Detector(entry.input, entry.decoder, load_labels(manifest, MODELS, entry.labels), session)
    result = det.run_bytes(session, image_bytes(PHOTO), 0.4, 50_000_000)
    session.close()
    return [(d.label, d.confidence, (d.x_min, d.y_min, d.x_max, d.y_max)) for d in result.detections]


def assert_same_as_cpu(body: dict[str, Any], model_id: str) -> None:
    want = cpu_reference(model_id)
    got = [(p["label"], p["confidence"], (p["x_min"], p["y_min"], p["x_max"], p["y_max"])) for p in body["predictions"]]
    assert [g[0] for g in got] == [w[0] for w in want], (got, want)
    for (_, gc, gb), (_, wc, wb) in zip(got, want, strict=True):
        assert abs(gc - wc) < 1e-3 and max(abs(a - b) for a, b in zip(gb, wb, strict=True)) <= 1, (got, want)
    assert {"dog", "bicycle", "car"} <= {g[0] for g in got} or model_id == "yolov8n"


def model_status(status: dict[str, Any], model_id: str) -> dict[str, Any]:
    return next(m for m in status["models"] if m.get("id") == model_id)


# ---- each accelerator serving ---------------------------------------------------------------------------------


async def test_rk3588_serves_on_three_npu_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with standins.rknnlite(monkeypatch, {"yolox_nano_rk3588_fp16.rknn": YOLOX_ONNX}) as lite:
        async with serving(board_settings(tmp_path, "orangepi5-rk3588s-vendor")) as (_core, cp, ds):
            assert sorted(c.core_mask for c in lite.contexts) == [1, 2, 4]  # one context per NPU core
            for c in lite.contexts:
                c.threads.clear()  # the warm-up ran on the loader thread
            bodies = await asyncio.gather(*(detect(cp) for _ in range(9)))
            for body in bodies:
                assert body["success"] and body["inferenceDevice"] == "NPU"
                assert_same_as_cpu(body, "yolox_nano")
            assert (await detect(ds))["inferenceDevice"] == "NPU"
            # Each context driven by one worker thread only, and concurrent requests spread over the cores.
            assert all(len(c.threads) <= 1 for c in lite.contexts)
            assert sum(1 for c in lite.contexts if c.runs > 1) >= 2, [c.runs for c in lite.contexts]
            status = await (await cp.get("/v1/status/system-status")).json()
            model = model_status(status, "yolox_nano")
            assert (model["accelerator"], model["workers"]) == ("rknn", 3)
            assert model["devices"] == ["npu-core:0", "npu-core:1", "npu-core:2"]
            assert model["fallbackReasons"] == [] and status["acceleratorStatus"]["state"] == "accelerator"
        assert all(c.released for c in lite.contexts)


@pytest.mark.parametrize(("board", "device", "devices"), [
    ("pi5-coral-usb-x2", "Multi-TPU", ["usb:0", "usb:1"]),
    ("pi5-coral-pcie", "TPU", ["pci:0"]),
])
async def test_edge_tpu_serves_one_worker_per_tpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, board: str,
                                                  device: str, devices: list[str]) -> None:
    twins = {"yolov8n_full_integer_quant_edgetpu.tflite": YOLOV8_TWIN}
    with standins.edgetpu(monkeypatch, twins) as (delegates, _):
        async with serving(board_settings(tmp_path, board)) as (_core, cp, _):
            body = await detect(cp)
            assert body["inferenceDevice"] == device
            assert_same_as_cpu(body, "yolov8n")
            assert [d.device for d in delegates] == devices  # one libedgetpu delegate per TPU
            model = model_status(await (await cp.get("/v1/status/system-status")).json(), "yolov8n")
            assert (model["accelerator"], model["devices"]) == ("edgetpu", devices)


async def test_jetson_serves_on_the_gpu_through_tensorrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with standins.onnxruntime_gpu(monkeypatch) as (requested, _):
        async with serving(board_settings(tmp_path, "jetson-orin-nano-jp6")) as (_core, cp, _):
            body = await detect(cp)
            assert body["inferenceDevice"] == "GPU"
            assert_same_as_cpu(body, "yolox_nano")
            trt = requested[0][0]
            assert trt[0] == standins.TRT and trt[1]["trt_fp16_enable"]
            assert Path(trt[1]["trt_engine_cache_path"]).parent == tmp_path / "cache"  # engine cache by model hash
            model = model_status(await (await cp.get("/v1/status/system-status")).json(), "yolox_nano")
            assert (model["accelerator"], model["devices"]) == ("tensorrt", ["cuda:0"])


def hailo_model_dir(tmp: Path) -> Path:
    """The shared models plus a hailo/ folder of this test's own (the shared folder is read-only)."""
    model_dir = tmp / "models"
    model_dir.mkdir()
    for sub in MODELS.iterdir():
        (model_dir / sub.name).symlink_to(sub)
    return model_dir


async def test_hailo_needs_an_imported_hef_then_serves_on_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = hailo_model_dir(tmp_path)
    settings = board_settings(tmp_path, "pi5-hailo8l", model_dir)
    # No .hef yet: the CPU serves, and the reason says how to get one.
    async with serving(settings) as (_core, cp, _):
        assert (await detect(cp))["inferenceDevice"] == "CPU"
        state = (await (await cp.get("/v1/status/system-status")).json())["acceleratorStatus"]
        assert state["state"] == "fallback" and "perchd models import" in state["reason"]

    hef = tmp_path / "yolov8n.hef"
    hef.write_bytes(b"stand-in .hef: hailo_platform below maps it to the int8 YOLOv8")
    labels = tmp_path / "coco80.txt"
    labels.write_text("\n".join(load_manifest().label_sets["coco80"]) + "\n")
    monkeypatch.setenv("PERCHD_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("PERCHD_CONFIG", "")
    assert perchd(["models", "import", str(hef), "--labels", str(labels), "--decoder", "yolov8"]) == 0
    assert "Hailo build of yolov8n" in capsys.readouterr().out
    assert (model_dir / "hailo" / "yolov8n.hef").is_file()

    with standins.hailo_platform(monkeypatch, {"yolov8n.hef": YOLOV8_TWIN}):
        async with serving(settings) as (_core, cp, _):
            body = await detect(cp)
            assert body["inferenceDevice"] == "NPU"
            assert_same_as_cpu(body, "yolov8n")
            model = model_status(await (await cp.get("/v1/status/system-status")).json(), "yolov8n")
            assert (model["accelerator"], model["devices"], model["fallbackReasons"]) == ("hailo", ["hailo0"], [])


# ---- accelerator fault -> CPU twin ----------------------------------------------------------------------------


@contextmanager
def faulty(kind: str, monkeypatch: pytest.MonkeyPatch, tmp: Path) -> Iterator[tuple[Settings, standins.Faults, str]]:
    """(settings, the stand-in's fault switch, model id) for one accelerator."""
    if kind == "rknn":
        with standins.rknnlite(monkeypatch, {"yolox_nano_rk3588_fp16.rknn": YOLOX_ONNX}) as lite:
            yield board_settings(tmp, "orangepi5-rk3588s-vendor"), lite.faults, "yolox_nano"
    elif kind == "edgetpu":
        twins = {"yolov8n_full_integer_quant_edgetpu.tflite": YOLOV8_TWIN}
        with standins.edgetpu(monkeypatch, twins) as (_, faults):
            yield board_settings(tmp, "pi5-coral-usb-x2"), faults, "yolov8n"
    elif kind == "tensorrt":
        with standins.onnxruntime_gpu(monkeypatch) as (_, faults):
            yield board_settings(tmp, "jetson-orin-nano-jp6"), faults, "yolox_nano"
    else:
        model_dir = hailo_model_dir(tmp)
        (model_dir / "hailo").mkdir()
        (model_dir / "hailo" / "yolov8n.hef").write_bytes(b"stand-in")
        with standins.hailo_platform(monkeypatch, {"yolov8n.hef": YOLOV8_TWIN}) as faults:
            yield board_settings(tmp, "pi5-hailo8l", model_dir), faults, "yolov8n"


async def wait_until(pred: Any, timeout: float = 15.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not await pred():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("kind", ["rknn", "edgetpu", "tensorrt", "hailo"])
async def test_accelerator_fault_fails_over_to_the_cpu_twin_and_back(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(failover, "RETRY_FIRST_S", 0.3)
    caplog.set_level(logging.INFO, logger="perch")
    with faulty(kind, monkeypatch, tmp_path) as (settings, faults, model_id):
        async with serving(settings) as (core, cp, ds):
            healthy = (await detect(cp))["inferenceDevice"]
            assert healthy != "CPU"
            faults.error = f"{kind} stand-in: device lost (injected)"
            # Every client keeps getting answers, on both listeners, concurrently with the fault.
            bodies = await asyncio.gather(*(detect(c) for c in (cp, ds, cp, ds)))
            for body in bodies:
                assert body["success"] and body["inferenceDevice"] == "CPU"
                assert_same_as_cpu(body, model_id)
            status = await (await cp.get("/v1/status/system-status")).json()
            model = model_status(status, model_id)
            assert model["degraded"] and "device lost (injected)" in model["degradedReason"]
            assert model["failover"]["twinLoaded"] and model["failover"]["faults"] >= 1
            assert status["acceleratorStatus"]["state"] == "degraded"
            assert "device lost (injected)" in status["acceleratorStatus"]["reason"]
            assert f"model {model_id} degraded" in caplog.text
            # A bad image is the client's problem on any device: refused the same way, not an accelerator fault.
            bad = await detect(ds, b"not an image", status=400)
            assert not bad["success"]

            faults.error = None  # the accelerator answers again: re-probed and taken back

            async def back() -> bool:
                return not core.registry.loaded[model_id].failover.degraded  # type: ignore[union-attr]

            await wait_until(back)
            assert (await detect(cp))["inferenceDevice"] == healthy
            model = model_status(await (await cp.get("/v1/status/system-status")).json(), model_id)
            assert not model["degraded"] and model["failover"]["recoveries"] == 1
            assert "answers again" in caplog.text


async def test_failed_probes_back_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(failover, "RETRY_FIRST_S", 0.1)
    with faulty("rknn", monkeypatch, tmp_path) as (settings, faults, model_id):
        async with serving(settings) as (core, cp, _):
            faults.error = "still broken"
            assert (await detect(cp))["inferenceDevice"] == "CPU"
            fo = core.registry.loaded[model_id].failover
            assert fo is not None
            calls = faults.calls
            await asyncio.sleep(1.0)
            # Probes at about 0.1, 0.3, 0.7 s: a handful of calls, not one per loop turn.
            probes = (faults.calls - calls) // 3
            assert 1 <= probes <= 4, probes
            assert fo.degraded and "still broken" in (fo.last_probe_error or "")
            assert fo.status()["failover"]["nextProbeInS"] is not None


@needs_service(mosquitto_available())
async def test_degraded_accelerator_reaches_home_assistant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MQTT diagnostics through a real Mosquitto: the stats message and the "Accelerator status" entity."""
    monkeypatch.setattr(failover, "RETRY_FIRST_S", 60.0)  # stays degraded while the test looks
    with faulty("rknn", monkeypatch, tmp_path) as (settings, faults, _), Mosquitto(tmp_path) as broker:
        sub = Subscriber(broker.port).start()
        try:
            async with serving(settings) as (core, cp, _):
                mqtt = SimpleNamespace(name="box1", cameras=[], mqtt={"host": "127.0.0.1", "port": broker.port,
                                                         "topic_prefix": "perch", "stats_interval_s": 1})
                async with run_cameras(mqtt, registry_detect(core.registry), hardware_info=core.hardware,
                                       stats_provider=registry_stats(core.registry)):
                    def stats(state: str) -> list[dict[str, Any]]:
                        return [m.json() for m in sub.on("perch/box1/stats")
                                if m.json().get("accelerator_status") == state]

                    await sub.wait_for(lambda: stats("accelerator"), 15, "healthy stats")
                    faults.error = "NPU timeout (injected)"
                    assert (await detect(cp))["inferenceDevice"] == "CPU"
                    degraded = await sub.wait_for(lambda: stats("degraded"), 15, "degraded stats")
                    assert "NPU timeout (injected)" in degraded[-1]["accelerator_reason"]
                    assert degraded[-1]["models"]["yolox_nano"]["device"] == "CPU"
                    entity = next(m.json() for m in sub.snapshot() if m.topic.endswith("/accelerator_status/config"))
                    assert entity["state_topic"] == entity["json_attributes_topic"] == "perch/box1/stats"
                    assert entity["entity_category"] == "diagnostic" and "accelerator_reason" in (
                        entity["json_attributes_template"])
        finally:
            sub.stop()
