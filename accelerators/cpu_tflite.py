"""CPU backend for .tflite models: ai-edge-litert (XNNPACK), tflite_runtime accepted as a fallback import."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendUnavailable, InferenceError, ModelLoadError, OpenOptions, TensorSpec

log = logging.getLogger("perch.litert")


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


# XNNPACK's default flags (QS8 | QU8) plus TRANSIENT_INDIRECTION_BUFFER: convolutions rebuild their pointer tables
# on each run instead of keeping one per layer, which is most of the memory of a large-input model (the cartoon GAN
# at 512x512: 392 -> 151 MiB) for about 25 % more time.
XNNPACK_LOW_MEMORY_FLAGS = 0x1 | 0x2 | 0x20


class CompiledModelSession:
    """LiteRT's CompiledModel API: the only one that takes XNNPACK flags. Same kernels and results as the
    interpreter; run() releases the GIL too."""

    kind = "cpu"

    def __init__(self, model: Any, device: str = "cpu") -> None:
        self._m = model
        self.device = device
        sig = next(iter(model.get_signature_list()))
        ins, outs = model.get_input_tensor_details(sig), model.get_output_tensor_details(sig)
        self.inputs = [TensorSpec(d["name"], tuple(d["shape"]), np.dtype(d["dtype"])) for d in ins.values()]
        self.outputs = [TensorSpec(d["name"], tuple(d["shape"]), np.dtype(d["dtype"])) for d in outs.values()]
        self._in = model.create_input_buffers(0)
        self._out = model.create_output_buffers(0)
        self._quiet_runs = 1  # the first run sets up a runtime environment and says so on fd 2

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._quiet_runs:
            self._quiet_runs -= 1
            with runtime_chatter_to_log():
                return self._run(inputs)
        return self._run(inputs)

    def _run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self._in):
            raise InferenceError(f"model takes {len(self._in)} inputs, got {len(inputs)}")
        try:
            for buf, tensor in zip(self._in, inputs, strict=True):
                buf.write(np.ascontiguousarray(tensor))
            self._m.run_by_index(0, self._in, self._out)
            return [buf.read(int(np.prod(spec.shape)), spec.dtype).reshape(spec.shape)
                    for buf, spec in zip(self._out, self.outputs, strict=True)]
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(f"LiteRT run failed: {exc}") from exc

    def close(self) -> None:
        with runtime_chatter_to_log():
            self._in = self._out = []
            self._m = None
            gc.collect()  # the runtime's environment sits in a reference cycle; free it (and its chatter) now


_LITERT_LINE = re.compile(r"^(INFO|WARNING|ERROR|VERBOSE): |^\u2514 ")
_fd2_lock = threading.Lock()


@contextlib.contextmanager
def runtime_chatter_to_log() -> Iterator[None]:
    """LiteRT's CompiledModel writes ~20 lines to fd 2 per model (registering NPU and GPU accelerators this board
    does not have, with warnings that would mislead a reader of the journal) and has no switch for it. Park fd 2 in
    a file meanwhile: LiteRT's lines go to the debug log, anything else written meanwhile goes on to stderr."""
    with _fd2_lock, tempfile.TemporaryFile() as parked:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(parked.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            parked.seek(0)
            for line in parked.read().decode(errors="replace").splitlines():
                if _LITERT_LINE.match(line):
                    log.debug("%s", line)
                else:
                    os.write(2, (line + "\n").encode())


def open_low_memory(path: Path, threads: int) -> CompiledModelSession:
    try:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.options import CpuOptions, Options
    except ImportError as exc:
        raise BackendUnavailable("low-memory mode needs ai-edge-litert's CompiledModel API") from exc
    options = Options(cpu_options=CpuOptions(num_threads=max(1, threads), xnnpack_flags=XNNPACK_LOW_MEMORY_FLAGS))
    try:
        with runtime_chatter_to_log():
            return CompiledModelSession(CompiledModel.from_file(str(path), options=options))
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load {path}: {str(exc).strip().splitlines()[-1] if str(exc) else exc}") \
            from exc


class TFLiteBackend:
    kind = "cpu"

    def open(self, path: Path, options: OpenOptions) -> TFLiteSession | CompiledModelSession:
        if options.extra.get("low_memory") == "1":
            return open_low_memory(path, options.threads)
        return TFLiteSession(open_interpreter(path, options.threads))
