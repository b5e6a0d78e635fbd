"""The TensorRT/CUDA backend for real, on an NVIDIA GPU (run by tests/device/gpu.sh, which installs onnxruntime-gpu
and TensorRT): the engine is built once and reused from the cache on the next start, detections equal the CPU's
within FP16 tolerance, and the daemon answers with `inferenceDevice: GPU`.

Elsewhere every test here skips (no GPU, or a CPU-only onnxruntime); under gpu.sh (PERCHD_GPU_REQUIRED=1) a skip
is a failure, so a GPU run cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from perch.accelerators.base import OpenOptions, get_backend
from perch.daemon.api.common import CODEPROJECT
from perch.daemon.app import create_app
from perch.daemon.config import Settings
from perch.daemon.core import Core
from perch.daemon.manifest import load_labels, load_manifest
from perch.daemon.vision.detect import Detector, DetectResult
from perch.daemon.vision.types import Detection

from conftest import IMAGES, MODELS

ONNX = MODELS / "detection" / "yolox_nano.onnx"
PHOTOS = ("dog_bicycle_car.jpg", "pets.jpg", "kite_and_cold.jpg")
TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
SUMMARY: list[str] = []


def gpu_missing() -> str | None:
    if not (shutil.which("nvidia-smi") or Path("/etc/nv_tegra_release").exists()):
        return "no NVIDIA GPU here (tests/device/gpu.sh runs these on one)"
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return "this onnxruntime has no CUDA provider (tests/device/gpu.sh installs onnxruntime-gpu)"
    return None


@pytest.fixture(scope="module", autouse=True)
def gpu() -> Iterator[None]:
    reason = gpu_missing()
    if reason:
        if os.environ.get("PERCHD_GPU_REQUIRED"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    yield
    text = "\n".join(SUMMARY)
    print("\n" + text)
    if os.environ.get("PERCHD_GPU_SUMMARY"):
        Path(os.environ["PERCHD_GPU_SUMMARY"]).write_text(text + "\n")


def engines(cache: Path) -> dict[str, float]:
    """Engine files under the cache and their modification times."""
    return {str(p.relative_to(cache)): p.stat().st_mtime for p in cache.rglob("*") if p.suffix in (".engine", ".trt")}


def iou(a: Detection, b: Detection) -> float:
    ix = max(0, min(a.x_max, b.x_max) - max(a.x_min, b.x_min))
    iy = max(0, min(a.y_max, b.y_max) - max(a.y_min, b.y_min))
    union = a.area() + b.area() - ix * iy
    return ix * iy / union if union > 0 else 0.0


def detector(session: Any) -> Detector:
    entry = load_manifest().models["yolox_nano"]
    assert entry.input is not None and entry.decoder is not None
    return Detector(entry.input, entry.decoder, load_labels(load_manifest(), MODELS, entry.labels), session)


def test_engine_build_cache_reuse_and_cpu_equality(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    first = get_backend("tensorrt").open(ONNX, OpenOptions(device="cuda:0", cache_dir=cache))
    t1 = time.perf_counter()
    providers = first.providers  # type: ignore[attr-defined]
    SUMMARY.append(f"providers granted: {providers}")
    assert providers[0] in (TRT, CUDA)
    det = detector(first)
    results = {name: det.run_bytes(first, (IMAGES / name).read_bytes(), 0.4, 50_000_000) for name in PHOTOS}
    built = engines(cache)
    first.close()
    if providers[0] == TRT:
        assert built, f"TensorRT granted but no engine written under {cache}"
        t2 = time.perf_counter()
        second = get_backend("tensorrt").open(ONNX, OpenOptions(device="cuda:0", cache_dir=cache))
        t3 = time.perf_counter()
        assert engines(cache) == built  # same files, untouched: the engine came from the cache
        second.close()
        SUMMARY.append(f"engine: {len(built)} file(s); first open {t1 - t0:.1f} s (build), second "
                       f"{t3 - t2:.1f} s (cache) — {((t1 - t0) / max(t3 - t2, 1e-3)):.0f}x")
    else:
        SUMMARY.append("TensorRT provider not granted (no TensorRT libraries): CUDA only, no engine to cache")

    cpu = get_backend("cpu_onnx").open(ONNX, OpenOptions())
    cpu_det = detector(cpu)
    worst_iou, worst_score = 1.0, 0.0
    for name in PHOTOS:
        want: DetectResult = cpu_det.run_bytes(cpu, (IMAGES / name).read_bytes(), 0.4, 50_000_000)
        got = results[name]
        assert sorted(d.label for d in got.detections) == sorted(d.label for d in want.detections), name
        left = list(got.detections)
        for w in want.detections:
            best = max((d for d in left if d.label == w.label), key=lambda d: iou(d, w))
            left.remove(best)
            worst_iou = min(worst_iou, iou(best, w))
            worst_score = max(worst_score, abs(best.confidence - w.confidence))
    cpu.close()
    SUMMARY.append(f"GPU vs CPU on {len(PHOTOS)} photos: same labels, box IoU >= {worst_iou:.3f}, "
                   f"|score diff| <= {worst_score:.3f}")
    assert worst_iou >= 0.9 and worst_score <= 0.03
    if providers[0] != TRT:
        pytest.fail("TensorRT was not granted: install the TensorRT libraries (tensorrt-cu12 / JetPack)")


async def test_daemon_answers_on_the_gpu_and_reuses_the_engine(tmp_path: Path) -> None:
    settings = Settings(model_dir=MODELS, state_dir=tmp_path / "s", cache_dir=tmp_path / "cache", legacy_port=0,
                        accelerator="tensorrt", detection={"model": "yolox_nano"})
    starts: list[float] = []
    built: dict[str, float] = {}
    for run in range(2):
        t0 = time.perf_counter()
        core = Core(settings)
        await core.start()
        starts.append(time.perf_counter() - t0)
        try:
            model = core.registry.loaded["yolox_nano"]
            assert model.kind == "tensorrt", model.fallback_reasons
            async with TestClient(TestServer(create_app(core, CODEPROJECT))) as client:
                fd = FormData()
                fd.add_field("image", (IMAGES / "dog_bicycle_car.jpg").read_bytes(), filename="a.jpg")
                body = await (await client.post("/v1/vision/detection", data=fd)).json()
            assert body["inferenceDevice"] == "GPU" and {"dog", "bicycle", "car"} <= {
                p["label"] for p in body["predictions"]}
            if run == 0:
                built = engines(settings.cache_dir)
            else:
                assert engines(settings.cache_dir) == built  # the second start reused the cached engine
        finally:
            await core.close()
    SUMMARY.append(f"daemon: inferenceDevice GPU; start with engine build {starts[0]:.1f} s, from cache "
                   f"{starts[1]:.1f} s")
