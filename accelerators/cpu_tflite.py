"""CPU backend for .tflite models: ai-edge-litert (XNNPACK), tflite_runtime accepted as a fallback import."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendUnavailable, InferenceError, ModelLoadError, OpenOptions, TensorSpec


def import_interpreter() -> tuple[Any, Any]:
    """(Interpreter, load_delegate) from ai-edge-litert, else tflite_runtime; shared with the Edge TPU backend."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, load_delegate
        except ImportError as exc:
            raise BackendUnavailable(
                "no TFLite runtime: pip install ai-edge-litert (or tflite-runtime)"
            ) from exc
    return Interpreter, load_delegate


def _spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero = detail.get("quantization", (0.0, 0))
    quant = (float(scale), int(zero)) if scale else None
    return TensorSpec(
        name=str(detail["name"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]),
        quant=quant,
    )


class TFLiteSession:
    """One interpreter; the scheduler gives each worker thread its own (interpreters are not thread-safe)."""

    kind = "cpu"

    def __init__(self, interpreter: Any, device: str = "cpu") -> None:
        self._it = interpreter
        self.device = device
        self._in = interpreter.get_input_details()
        self._out = interpreter.get_output_details()
        self.inputs = [_spec(d) for d in self._in]
        self.outputs = [_spec(d) for d in self._out]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self._in):
            raise InferenceError(f"model takes {len(self._in)} inputs, got {len(inputs)}")
        try:
            for detail, tensor in zip(self._in, inputs, strict=True):
                self._it.set_tensor(detail["index"], tensor)
            # invoke() releases the GIL in the C++ runtime, so worker threads really run in parallel.
            self._it.invoke()
            # get_tensor copies; the next invoke would overwrite a view.
            return [self._it.get_tensor(d["index"]) for d in self._out]
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(f"TFLite invoke failed: {exc}") from exc

    def close(self) -> None:
        self._it = None


def open_interpreter(path: Path, threads: int, delegates: list[Any] | None = None) -> Any:
    interpreter_cls, _ = import_interpreter()
    try:
        it = interpreter_cls(
            model_path=str(path), num_threads=max(1, threads), experimental_delegates=delegates or None
        )
        it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        msg = str(exc)
        if "edgetpu-custom-op" in msg:
            raise ModelLoadError(
                f"{path.name} is compiled for the Edge TPU and cannot run on the CPU; use its CPU twin"
            ) from exc
        raise ModelLoadError(f"cannot load {path}: {msg.strip().splitlines()[-1] if msg else exc}") from exc
    return it


class TFLiteBackend:
    kind = "cpu"

    def open(self, path: Path, options: OpenOptions) -> TFLiteSession:
        return TFLiteSession(open_interpreter(path, options.threads))
