"""TensorRT and Hailo backends on this x86 machine: the real failure paths (CPU-only onnxruntime, no HailoRT) and
the Session wiring with fakes only at the vendor-library seam (onnxruntime-gpu's provider list, hailo_platform).
RKNN and Edge TPU are in test_backends.py; the GPU run itself is tests/device/gpu.sh."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perch.accelerators.base import (
    BackendUnavailable,
    ModelLoadError,
    OpenOptions,
    get_backend,
)

from conftest import MODELS
from helpers.standins import hailo_module
from helpers.vendor import importable

YOLOX_ONNX = MODELS / "detection" / "yolox_nano.onnx"


def need(*paths: Path) -> None:
    for p in paths:
        if not p.is_file():
            pytest.skip(f"shared model {p} missing")


# ---------------------------------------------------------------------------------------------------- TensorRT


def test_tensorrt_on_cpu_onnxruntime_refuses_to_pretend(tmp_path: Path) -> None:
    """Real: this onnxruntime build has no TensorRT/CUDA provider; the backend says what to install."""
    import onnxruntime as ort

    need(YOLOX_ONNX)
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(BackendUnavailable, match=r"offers only .*CPUExecutionProvider.*onnxruntime-gpu"):
        get_backend("tensorrt").open(YOLOX_ONNX, OpenOptions(device="cuda:0", cache_dir=tmp_path))


def test_tensorrt_provider_chain_and_cache_key(tmp_path: Path) -> None:
    from perch.accelerators.tensorrt import device_id, engine_cache_dir, file_sha256, provider_chain

    model = tmp_path / "m.onnx"
    model.write_bytes(b"model bytes")
    sha = file_sha256(model)
    cache = engine_cache_dir(model, OpenOptions(cache_dir=tmp_path / "cache"), "10.3.0")
    assert cache == tmp_path / "cache" / f"trt-{sha[:16]}-10.3.0"
    given = engine_cache_dir(model, OpenOptions(cache_dir=tmp_path, sha256="ab" * 32), "8.6.2")
    assert given.name == "trt-abababababababab-8.6.2"
    chain = provider_chain(cache, 1)
    assert [p if isinstance(p, str) else p[0] for p in chain] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = chain[0][1]  # type: ignore[index]
    assert trt["trt_fp16_enable"] and trt["trt_engine_cache_enable"]
    assert trt["trt_engine_cache_path"] == str(cache) and trt["device_id"] == 1
    assert device_id("cuda:1") == 1 and device_id(None) == 0
    with pytest.raises(BackendUnavailable):
        device_id("usb:0")


def _fake_ort_gpu(granted: list[str], requested: list[Any]) -> types.ModuleType:
    """A stand-in onnxruntime-gpu for the import seam: the real CPU onnxruntime underneath, `granted` claimed."""
    import onnxruntime as real_ort

    class GpuSession(real_ort.InferenceSession):  # type: ignore[misc]
        def __init__(self, path: str, sess_options: Any = None, providers: Any = None) -> None:
            requested.extend(providers or [])
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

        def get_providers(self) -> list[str]:
            return list(granted)

    fake = types.ModuleType("onnxruntime")
    fake.__getattr__ = lambda name: getattr(real_ort, name)  # type: ignore[method-assign]  # PEP 562: the rest
    fake.InferenceSession = GpuSession  # type: ignore[attr-defined]
    fake.get_available_providers = lambda: [  # type: ignore[attr-defined]
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    return fake


def test_tensorrt_session_records_granted_providers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need(YOLOX_ONNX)
    requested: list[Any] = []
    granted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setitem(sys.modules, "onnxruntime", _fake_ort_gpu(granted, requested))
    session = get_backend("tensorrt").open(YOLOX_ONNX, OpenOptions(device="cuda:0", cache_dir=tmp_path))
    assert (session.kind, session.device) == ("tensorrt", "cuda:0")
    assert session.providers == granted  # type: ignore[attr-defined]
    cache = session.cache_dir  # type: ignore[attr-defined]
    assert cache.is_dir() and cache.parent == tmp_path and cache.name.startswith("trt-e8af074932d4ed7e-")
    assert [p if isinstance(p, str) else p[0] for p in requested] == granted
    assert requested[0][1]["trt_engine_cache_path"] == str(cache)
    out = session.run([np.zeros((1, 3, 416, 416), np.float32)])
    assert out[0].shape == (1, 3549, 85)
    session.close()


def test_tensorrt_only_cpu_granted_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu whose CUDA libraries fail to load carries on on the CPU: the backend must refuse that."""
    need(YOLOX_ONNX)
    monkeypatch.setitem(sys.modules, "onnxruntime", _fake_ort_gpu(["CPUExecutionProvider"], []))
    with pytest.raises(BackendUnavailable, match="granted only CPUExecutionProvider"):
        get_backend("tensorrt").open(YOLOX_ONNX, OpenOptions(device="cuda:0", cache_dir=tmp_path))


# ---------------------------------------------------------------------------------------------------- Hailo


def test_hailo_without_hailort(tmp_path: Path) -> None:
    if importable("hailo_platform"):
        pytest.skip("HailoRT is installed here")
    model = tmp_path / "yolov8s_h8l.hef"
    model.write_bytes(b"hef")
    with pytest.raises(BackendUnavailable, match="hailo-all"):
        get_backend("hailo").open(model, OpenOptions(device="hailo0"))
    with pytest.raises(ModelLoadError, match="Dataflow Compiler"):
        get_backend("hailo").open(tmp_path / "m.onnx", OpenOptions())


def _fake_hailo(events: list[str]) -> types.ModuleType:
    """hailo_platform's classic InferVStreams API, recording context entry/exit order."""

    class Ctx:
        def __init__(self, name: str) -> None:
            self.name = name

        def __enter__(self) -> Any:
            events.append(f"enter {self.name}")
            return self

        def __exit__(self, *exc: object) -> None:
            events.append(f"exit {self.name}")

    class Info:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class HEF:
        def __init__(self, path: str) -> None:
            self.path = path

        def get_input_vstream_infos(self) -> list[Info]:
            return [Info("in", (4, 4, 3))]

        def get_output_vstream_infos(self) -> list[Info]:
            return [Info("out", (2,))]

    class Group:
        def create_params(self) -> dict[str, Any]:
            return {}

        def activate(self, params: Any) -> Ctx:
            return Ctx("activate")

    class VDevice(Ctx):
        def __init__(self, params: Any = None) -> None:
            super().__init__("vdevice")

        @staticmethod
        def create_params() -> dict[str, Any]:
            return {}

        def configure(self, hef: HEF, params: Any) -> list[Group]:
            return [Group()]

    class InferVStreams(Ctx):
        def __init__(self, group: Group, inp: Any, out: Any) -> None:
            super().__init__("vstreams")

        def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            x = feed["in"]
            assert x.dtype == np.uint8 and x.shape == (1, 4, 4, 3)
            return {"out": np.array([[float(x.sum()), 1.0]], np.float32)}

    mod = hailo_module(HEF, VDevice, InferVStreams)
    return mod


def test_hailo_session_wiring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setitem(sys.modules, "hailo_platform", _fake_hailo(events))
    model = tmp_path / "m.hef"
    model.write_bytes(b"hef")
    session = get_backend("hailo").open(model, OpenOptions(device="hailo0"))
    assert session.inputs[0].shape == (1, 4, 4, 3) and session.inputs[0].dtype == np.uint8
    out = session.run([np.ones((4, 4, 3), np.uint8)])
    assert out[0].tolist() == [[48.0, 1.0]]
    session.close()
    assert events == ["enter vdevice", "enter vstreams", "enter activate", "exit activate", "exit vstreams",
                      "exit vdevice"]
