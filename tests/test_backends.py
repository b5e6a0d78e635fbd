"""Vendor backends on this x86 machine: the real failure paths (no librknnrt, no libedgetpu, CPU-only onnxruntime,
no HailoRT), and the Session wiring with fakes only at the vendor-library seam (rknnlite, hailo_platform, the
libedgetpu shared object). Real RKNN numerics are in tests/rknn_sim (own venv, rknn-toolkit2 simulator)."""

from __future__ import annotations

import ctypes.util
import gc
import shutil
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from perch.accelerators.base import (
    BackendUnavailable,
    InferenceError,
    ModelLoadError,
    OpenOptions,
    Session,
    get_backend,
)

from conftest import MODELS

RKNN_MODEL = MODELS / "rknn" / "yolox_nano_rk3588_fp16.rknn"
YOLOX_ONNX = MODELS / "detection" / "yolox_nano.onnx"
EDGETPU_MODEL = MODELS / "edgetpu" / "yolov8n_full_integer_quant_edgetpu.tflite"


def need(*paths: Path) -> None:
    for p in paths:
        if not p.is_file():
            pytest.skip(f"shared model {p} missing")


@pytest.mark.parametrize("kind", ["rknn", "edgetpu", "tensorrt", "hailo"])
def test_registry_imports_without_vendor_sdks(kind: str) -> None:
    backend = get_backend(kind)
    assert backend.kind == kind


# ---------------------------------------------------------------------------------------------------- RKNN


def test_rknn_without_rknnlite_says_what_to_install(tmp_path: Path) -> None:
    if "rknnlite" in sys.modules or _importable("rknnlite"):
        pytest.skip("rknnlite is installed here")
    model = tmp_path / "m.rknn"
    model.write_bytes(b"RKNN")
    with pytest.raises(BackendUnavailable, match="rknn-toolkit-lite2"):
        get_backend("rknn").open(model, OpenOptions(device="npu-core:0"))


def test_rknn_rejects_other_formats(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="rknn-toolkit2"):
        get_backend("rknn").open(model, OpenOptions())


def test_rknn_metadata_of_a_real_model() -> None:
    from perch.accelerators.rknn import _specs, read_rknn_metadata

    need(RKNN_MODEL)
    ins, outs, layouts = _specs(read_rknn_metadata(RKNN_MODEL))
    assert [(s.name, s.shape) for s in ins] == [("images", (1, 3, 416, 416))]
    assert [(s.name, s.shape) for s in outs] == [("output", (1, 3549, 85))]
    assert layouts == ["nchw"]


class FakeRKNNLite:
    """The RKNNLite API surface, recording calls; returns codes like the real one. Outputs are zeros."""

    NPU_CORE_AUTO = 0
    NPU_CORE_0 = 1
    NPU_CORE_1 = 2
    NPU_CORE_2 = 4
    NPU_CORE_0_1_2 = 7
    instances: ClassVar[list[FakeRKNNLite]] = []
    fail: ClassVar[str | None] = None

    def __init__(self, verbose: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.threads: set[int] = set()
        FakeRKNNLite.instances.append(self)

    def load_rknn(self, path: str) -> int:
        self.calls.append(("load_rknn", path))
        return -1 if self.fail == "load" else 0

    def init_runtime(self, core_mask: int = 0) -> int:
        self.calls.append(("init_runtime", core_mask))
        return -1 if self.fail == "init" else 0

    def inference(self, inputs: list[np.ndarray], data_format: Any = None) -> list[np.ndarray] | None:
        self.calls.append(("inference", data_format))
        self.threads.add(threading.get_ident())
        if self.fail == "run":
            return None
        return [np.zeros((1, 3549, 85), np.float32)]

    def release(self) -> None:
        self.calls.append(("release", None))


@pytest.fixture
def fake_rknnlite(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeRKNNLite]]:
    """Injects FakeRKNNLite where accelerators/rknn.py imports it (`from rknnlite.api import RKNNLite`)."""
    pkg = types.ModuleType("rknnlite")
    api = types.ModuleType("rknnlite.api")
    api.RKNNLite = FakeRKNNLite  # type: ignore[attr-defined]
    pkg.api = api  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rknnlite", pkg)
    monkeypatch.setitem(sys.modules, "rknnlite.api", api)
    FakeRKNNLite.instances = []
    FakeRKNNLite.fail = None
    yield FakeRKNNLite
    FakeRKNNLite.fail = None


def test_rknn_one_context_per_core_spread_over_threads(fake_rknnlite: type[FakeRKNNLite]) -> None:
    need(RKNN_MODEL)
    backend = get_backend("rknn")
    sessions = [backend.open(RKNN_MODEL, OpenOptions(device=f"npu-core:{i}")) for i in range(3)]
    assert all(isinstance(s, Session) for s in sessions)
    assert [s.device for s in sessions] == ["npu-core:0", "npu-core:1", "npu-core:2"]
    masks = [dict(f.calls)["init_runtime"] for f in fake_rknnlite.instances]
    assert masks == [1, 2, 4]

    nchw = np.zeros((1, 3, 416, 416), np.float32)
    nhwc = np.zeros((1, 416, 416, 3), np.uint8)

    def work(session: Any) -> None:
        for _ in range(3):
            out = session.run([nchw])
            assert out[0].shape == (1, 3549, 85)
        session.run([nhwc])

    workers = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for fake in fake_rknnlite.instances:
        formats = [arg for name, arg in fake.calls if name == "inference"]
        assert formats == ["nchw", "nchw", "nchw", "nhwc"]
        assert len(fake.threads) == 1  # each context driven by one worker thread only
    assert sessions[0].inputs[0].shape == (1, 3, 416, 416)
    for s in sessions:
        s.close()
        s.close()  # idempotent
    assert all(f.calls[-1] == ("release", None) for f in fake_rknnlite.instances)
    assert all(sum(1 for c in f.calls if c[0] == "release") == 1 for f in fake_rknnlite.instances)


def test_rknn_without_metadata_guesses_layout(fake_rknnlite: type[FakeRKNNLite], tmp_path: Path) -> None:
    """A .rknn whose tensor attributes cannot be read still opens: float32 input promised, layout guessed,
    output specs learnt from the first run."""
    model = tmp_path / "old_toolkit.rknn"
    model.write_bytes(b"RKNN" + bytes(64))
    session = get_backend("rknn").open(model, OpenOptions(device="npu-core:2"))
    assert session.inputs[0].dtype == np.float32 and session.outputs == []
    session.run([np.zeros((1, 3, 416, 416), np.float32)])
    session.run([np.zeros((1, 416, 416, 3), np.uint8)])
    formats = [arg for name, arg in fake_rknnlite.instances[-1].calls if name == "inference"]
    assert formats == ["nchw", "nhwc"]
    assert session.outputs[0].shape == (1, 3549, 85)
    session.close()


def test_rknn_return_codes_become_exceptions(fake_rknnlite: type[FakeRKNNLite]) -> None:
    need(RKNN_MODEL)
    backend = get_backend("rknn")
    fake_rknnlite.fail = "load"
    with pytest.raises(ModelLoadError, match="load_rknn"):
        backend.open(RKNN_MODEL, OpenOptions(device="npu-core:0"))
    fake_rknnlite.fail = "init"
    with pytest.raises(ModelLoadError, match="target_platform"):
        backend.open(RKNN_MODEL, OpenOptions(device="npu-core:1"))
    assert all(f.calls[-1][0] == "release" for f in fake_rknnlite.instances)
    fake_rknnlite.fail = None
    session = backend.open(RKNN_MODEL, OpenOptions())
    assert dict(fake_rknnlite.instances[-1].calls)["init_runtime"] == 0  # no device: NPU_CORE_AUTO
    fake_rknnlite.fail = "run"
    with pytest.raises(InferenceError, match="no outputs"):
        session.run([np.zeros((1, 3, 416, 416), np.float32)])
    with pytest.raises(BackendUnavailable, match="npu-core"):
        backend.open(RKNN_MODEL, OpenOptions(device="npu-core:7"))
    session.close()
    with pytest.raises(InferenceError, match="closed"):
        session.run([np.zeros((1, 3, 416, 416), np.float32)])


# ---------------------------------------------------------------------------------------------------- Edge TPU


# ai-edge-litert's Delegate.__del__ raises AttributeError on a delegate whose library failed to load (vendor bug).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_edgetpu_without_libedgetpu_is_library_missing() -> None:
    """Real: libedgetpu.so.1 is not installed here, so ai-edge-litert's load_delegate raises OSError."""
    from perch.accelerators.edgetpu import EdgeTPULibraryMissing

    need(EDGETPU_MODEL)
    if ctypes.util.find_library("edgetpu"):
        pytest.skip("libedgetpu is installed here")
    with pytest.raises(EdgeTPULibraryMissing, match="libedgetpu1-std") as info:
        get_backend("edgetpu").open(EDGETPU_MODEL, OpenOptions(device="usb:0"))
    assert isinstance(info.value, BackendUnavailable)
    assert isinstance(info.value.__cause__, OSError)
    del info
    gc.collect()


FAKE_LIBEDGETPU = r"""
#include <stddef.h>
typedef void (*report_fn)(const char *);
/* libedgetpu's external-delegate entry points; no TPU ever answers. */
void *tflite_plugin_create_delegate(char **keys, char **values, size_t n, report_fn report) {
    const char *dev = "default";
    for (size_t i = 0; i < n; i++) if (keys[i][0] == 'd') dev = values[i];
    (void)dev;
    if (report) report("Failed to open Edge TPU device");
    return NULL;
}
void tflite_plugin_destroy_delegate(void *d) { (void)d; }
"""


def test_edgetpu_with_no_device_is_not_found(tmp_path: Path) -> None:
    """The ValueError path through ai-edge-litert's real load_delegate, with a stand-in libedgetpu that finds no TPU
    (the only fake: the vendor shared object)."""
    from perch.accelerators.edgetpu import EdgeTPUBackend, EdgeTPUNotFound

    need(EDGETPU_MODEL)
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the stand-in libedgetpu")
    src = tmp_path / "fake_edgetpu.c"
    src.write_text(FAKE_LIBEDGETPU)
    lib = tmp_path / "libedgetpu.so.1"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    with pytest.raises(EdgeTPUNotFound, match="no Edge TPU answered at pci:0") as info:
        EdgeTPUBackend(library=str(lib)).open(EDGETPU_MODEL, OpenOptions(device="pci:0"))
    assert isinstance(info.value.__cause__, ValueError)
    assert "Failed to open Edge TPU device" in str(info.value)
    with pytest.raises(EdgeTPUNotFound, match="unknown Edge TPU device"):
        EdgeTPUBackend(library=str(lib)).open(EDGETPU_MODEL, OpenOptions(device="npu-core:0"))


def test_edgetpu_model_on_cpu_needs_its_twin() -> None:
    """An _edgetpu.tflite on the plain CPU interpreter fails with "unresolved custom op": a ModelLoadError that sends
    the daemon to the CPU twin, which loads and runs."""
    from perch.accelerators.edgetpu import cpu_twin

    need(EDGETPU_MODEL)
    with pytest.raises(ModelLoadError, match="CPU twin"):
        get_backend("cpu_tflite").open(EDGETPU_MODEL, OpenOptions())
    twin = cpu_twin(EDGETPU_MODEL)
    assert twin is not None and twin.name == "yolov8n_full_integer_quant_cpu_twin.tflite"
    session = get_backend("cpu_tflite").open(twin, OpenOptions())
    out = session.run([np.zeros(session.inputs[0].shape, session.inputs[0].dtype)])
    assert out[0].shape == (1, 84, 8400)
    session.close()
    assert cpu_twin(twin) is None


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
    if _importable("hailo_platform"):
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

    class Params:
        @staticmethod
        def make(group: Group, format_type: str) -> str:
            return format_type

        @staticmethod
        def create_from_hef(hef: HEF, interface: str) -> str:
            return interface

    mod = types.ModuleType("hailo_platform")
    mod.__dict__.update(
        HEF=HEF, VDevice=VDevice, InferVStreams=InferVStreams, ConfigureParams=Params, InputVStreamParams=Params,
        OutputVStreamParams=Params, FormatType=types.SimpleNamespace(UINT8="u8", FLOAT32="f32"),
        HailoStreamInterface=types.SimpleNamespace(PCIe="pcie"),
    )
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


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
