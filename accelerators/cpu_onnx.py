"""CPU backend for .onnx models: onnxruntime with the CPU execution provider."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendUnavailable, InferenceError, ModelLoadError, OpenOptions, TensorSpec

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorSpec(name=arg.name, shape=shape, dtype=np.dtype(_ORT_DTYPES.get(arg.type, np.float32)))


class OnnxSession:
    """An onnxruntime session; `providers` records what onnxruntime really granted."""

    def __init__(self, session: Any, kind: str = "cpu", device: str = "cpu") -> None:
        self._s = session
        self.kind = kind
        self.device = device
        self.providers: list[str] = list(session.get_providers())
        self.inputs = [_spec(a) for a in session.get_inputs()]
        self.outputs = [_spec(a) for a in session.get_outputs()]
        self._names = [a.name for a in self.inputs]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        try:
            return list(self._s.run(None, dict(zip(self._names, inputs, strict=True))))
        except Exception as exc:  # onnxruntime raises its own exception types without a common base
            raise InferenceError(f"onnxruntime run failed: {exc}") from exc

    def close(self) -> None:
        self._s = None


def make_session(path: Path, threads: int, providers: list[Any]) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    # One session per worker thread already gives parallelism; spinning threads would steal the other core.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:
        raise ModelLoadError(f"cannot load {path}: {exc}") from exc


class OnnxBackend:
    kind = "cpu"

    def open(self, path: Path, options: OpenOptions) -> OnnxSession:
        return OnnxSession(make_session(path, options.threads, ["CPUExecutionProvider"]))
