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
from helpers.vendor import importable

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
    if "rknnlite" in sys.modules or importable("rknnlite"):
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
