"""Backend / Session protocols, the backend registry and the errors every backend raises.

A task (daemon/vision) only ever sees a Session: `run(list[np.ndarray]) -> list[np.ndarray]` plus tensor specs.
Each backend lives in one module of this package and registers itself by kind; vendor libraries are imported
lazily inside `open()` so that importing the package never needs a vendor SDK.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

# Accelerator kinds, in the order "auto" prefers them when a model has a variant for several.
KINDS: tuple[str, ...] = ("rknn", "edgetpu", "tensorrt", "hailo", "cpu")

# What CodeProject.AI clients expect in `inferenceDevice` for each kind.
DEVICE_NAMES: dict[str, str] = {
    "rknn": "NPU",
    "edgetpu": "TPU",
    "tensorrt": "GPU",
    "hailo": "NPU",
    "cpu": "CPU",
}


class AcceleratorError(Exception):
    """Base class for backend failures; the message is meant for a person reading a log."""


class BackendUnavailable(AcceleratorError):
    """The vendor library or device needed by a backend is not there."""


class ModelLoadError(AcceleratorError):
    """The model file could not be loaded by this backend."""


class InferenceError(AcceleratorError):
    """The runtime failed while running a loaded model."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    # (scale, zero_point) for quantised tensors; None for float tensors.
    quant: tuple[float, int] | None = None


@runtime_checkable
class Session(Protocol):
    """One loaded model on one device. Not thread-safe: the scheduler gives each worker thread its own."""

    kind: str  # accelerator kind, one of KINDS
    device: str  # where it runs, e.g. "cpu", "npu-core:1", "usb:0"
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class OpenOptions:
    """What the daemon tells a backend when it opens a model."""

    threads: int = 1
    device: str | None = None  # a device id from the probe ("usb:0", "npu-core:2"); None = backend's choice
    cache_dir: Path | None = None  # for compiled engines (TensorRT)
    sha256: str | None = None  # model hash, used as a cache key
    extra: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    kind: str

    def open(self, path: Path, options: OpenOptions) -> Session: ...


BackendFactory = Callable[[], Backend]

# kind -> "module:attribute" of a zero-argument factory; modules are imported only when a kind is used.
_REGISTRY: dict[str, str] = {
    "cpu_tflite": "perch.accelerators.cpu_tflite:TFLiteBackend",
    "cpu_onnx": "perch.accelerators.cpu_onnx:OnnxBackend",
    "rknn": "perch.accelerators.rknn:RKNNBackend",
    "edgetpu": "perch.accelerators.edgetpu:EdgeTPUBackend",
    "tensorrt": "perch.accelerators.tensorrt:TensorRTBackend",
    "hailo": "perch.accelerators.hailo:HailoBackend",
    # Runtimes a manifest variant names with `runtime:` (models that only one library can run, all on the CPU).
    "opencv-yunet": "perch.accelerators.cpu_opencv:YuNetBackend",
    "opencv-superres": "perch.accelerators.cpu_opencv:SuperResBackend",
    "dlib": "perch.accelerators.cpu_dlib:DlibBackend",
}


def register_backend(name: str, target: str) -> None:
    """Register (or replace) a backend as "module:attribute"; used by plugins and by tests at the vendor seam."""
    _REGISTRY[name] = target


def backend_names() -> tuple[str, ...]:
    """Every registered backend name: what a manifest variant's `runtime:` may say."""
    return tuple(_REGISTRY)


def get_backend(name: str) -> Backend:
    try:
        target = _REGISTRY[name]
    except KeyError as exc:
        raise BackendUnavailable(f"no backend named {name!r}") from exc
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} cannot be imported: {exc}") from exc
    factory: BackendFactory = getattr(module, attr)
    return factory()


def backend_for_file(kind: str, path: Path, runtime: str | None = None) -> str:
    """Which registered backend runs `path` for accelerator `kind`: the variant's `runtime` when it names one,
    else by kind, the CPU splitting by file format."""
    if runtime:
        return runtime
    if kind == "cpu":
        return "cpu_onnx" if path.suffix == ".onnx" else "cpu_tflite"
    return kind
