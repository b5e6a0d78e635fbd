"""NVIDIA backend (Jetson or a discrete GPU): an `.onnx` model on onnxruntime's TensorRT provider, then CUDA.

TensorRT builds an engine for the exact GPU and TensorRT version on first load, which takes minutes on a Jetson: the
engine cache lives under `OpenOptions.cache_dir / f"trt-{sha256[:16]}-{trt_version}"` so that a new model file or a
JetPack upgrade gets a fresh engine and never a stale one. FP16 is on (Jetson GPUs run it at twice the FP32 rate).

onnxruntime silently drops providers it cannot initialise, so the Session records `get_providers()` (what was
really granted). When only the CPU was granted this backend raises BackendUnavailable: the daemon then falls back to
its own CPU path explicitly and says why, instead of "GPU" running on the CPU unnoticed.
"""

from __future__ import annotations

import ctypes.util
import glob
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from .base import BackendUnavailable, ModelLoadError, OpenOptions
from .cpu_onnx import OnnxSession, make_session

TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def tensorrt_version() -> str:
    """TensorRT version for the cache key: the Python module, else libnvinfer's file name, else "unknown"."""
    try:
        import tensorrt  # type: ignore[import-not-found]

        return str(tensorrt.__version__)
    except Exception:  # not installed, or a broken install: the library name is good enough
        pass
    for d in ("/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/local/cuda/lib64", "/usr/lib"):
        for lib in sorted(glob.glob(f"{d}/libnvinfer.so.*.*")):
            m = re.search(r"libnvinfer\.so\.([\d.]+)$", lib)
            if m:
                return m.group(1)
    found = ctypes.util.find_library("nvinfer")
    m = re.search(r"\.so\.([\d.]+)$", found or "")
    return m.group(1) if m else "unknown"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def engine_cache_dir(path: Path, options: OpenOptions, trt_version: str) -> Path:
    base = options.cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "perchd"
    sha = options.sha256 or file_sha256(path)
    return Path(base) / f"trt-{sha[:16]}-{trt_version}"


def device_id(device: str | None) -> int:
    if device in (None, "", "cuda"):
        return 0
    m = re.fullmatch(r"cuda:(\d+)", device or "")
    if not m:
        raise BackendUnavailable(f"unknown TensorRT device {device!r}: expected cuda:N")
    return int(m.group(1))


def provider_chain(cache: Path, gpu: int) -> list[tuple[str, dict[str, Any]] | str]:
    """TensorRT (FP16, engine + timing cache) -> CUDA -> CPU, in onnxruntime's provider syntax."""
    trt_options: dict[str, Any] = {
        "device_id": gpu,
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
    }
    return [(TRT, trt_options), (CUDA, {"device_id": gpu}), CPU]


class TensorRTSession(OnnxSession):
    """An OnnxSession whose `providers` tells TensorRT, CUDA or (never here) CPU; `cache_dir` holds the engine."""

    def __init__(self, session: Any, device: str, cache_dir: Path) -> None:
        super().__init__(session, kind="tensorrt", device=device)
        self.cache_dir = cache_dir

    @property
    def provider(self) -> str:
        """The provider that runs the graph: the first one granted."""
        return self.providers[0] if self.providers else CPU


class TensorRTBackend:
    kind = "tensorrt"

    def open(self, path: Path, options: OpenOptions) -> TensorRTSession:
        path = Path(path)
        if path.suffix != ".onnx":
            raise ModelLoadError(f"{path.name} is not an .onnx model: the TensorRT backend builds its engine from ONNX")
        if not path.is_file():
            raise ModelLoadError(f"{path} does not exist: run `perchd models pull`")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable("onnxruntime is not installed: install onnxruntime-gpu") from exc
        available = list(ort.get_available_providers())
        if TRT not in available and CUDA not in available:
            # Asking a CPU-only build for GPU providers only produces warnings; say what to install instead.
            raise BackendUnavailable(
                f"this onnxruntime offers only {', '.join(available)}: install NVIDIA's onnxruntime-gpu wheel for "
                "your JetPack/CUDA release (pip install 'perchd[jetson]' on x86)"
            )
        gpu = device_id(options.device)
        cache = engine_cache_dir(path, options, tensorrt_version())
        chain = [p for p in provider_chain(cache, gpu) if (p if isinstance(p, str) else p[0]) in available]
        if TRT in available:
            cache.mkdir(parents=True, exist_ok=True)
        session = make_session(path, options.threads, chain)
        granted = list(session.get_providers())
        if not any(p in granted for p in (TRT, CUDA)):
            # onnxruntime-gpu drops a provider whose CUDA/TensorRT libraries fail to load and carries on on the CPU.
            raise BackendUnavailable(
                f"onnxruntime granted only {', '.join(granted) or 'nothing'} for {path.name} although it offers "
                f"{', '.join(available)}: the CUDA/cuDNN/TensorRT libraries did not load; check that JetPack (or "
                "CUDA + TensorRT) matches this onnxruntime-gpu build and that they are on the loader path"
            )
        return TensorRTSession(session, f"cuda:{gpu}", cache)
