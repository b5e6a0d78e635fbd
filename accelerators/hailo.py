"""Hailo-8/8L backend: a compiled `.hef` through HailoRT's Python binding (hailo_platform), when it is installed.

HailoRT comes from Hailo's apt packages (Raspberry Pi OS: `apt install hailo-all`), not from PyPI, so the daemon's
venv needs `--system-site-packages` to see it. One Session = one configured network group on one device, kept
activated with its virtual streams open between runs (activation costs milliseconds, inference less). Inputs are
fed as UINT8 NHWC (what Hailo's compiled models expect); outputs come back dequantised to FLOAT32.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendUnavailable, InferenceError, ModelLoadError, OpenOptions, TensorSpec


def import_hailo() -> Any:
    try:
        import hailo_platform
    except ImportError as exc:
        raise BackendUnavailable(
            f"hailo_platform is not importable ({exc}): install HailoRT (Raspberry Pi OS: apt install hailo-all) "
            "and create the venv with --system-site-packages"
        ) from exc
    return hailo_platform


class HailoSession:
    kind = "hailo"

    def __init__(self, hp: Any, path: Path, device: str) -> None:
        self.device = device
        self.path = path
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()
        try:
            self._hef = hp.HEF(str(path))
            params = hp.VDevice.create_params()
            self._target = self._stack.enter_context(hp.VDevice(params))
            configure = hp.ConfigureParams.create_from_hef(hef=self._hef, interface=hp.HailoStreamInterface.PCIe)
            group = self._target.configure(self._hef, configure)[0]
            in_params = hp.InputVStreamParams.make(group, format_type=hp.FormatType.UINT8)
            out_params = hp.OutputVStreamParams.make(group, format_type=hp.FormatType.FLOAT32)
            self._pipe = self._stack.enter_context(hp.InferVStreams(group, in_params, out_params))
            self._stack.enter_context(group.activate(group.create_params()))
        except Exception as exc:  # HailoRT raises HailoRTException subclasses without a public base to import
            self._stack.close()
            raise ModelLoadError(f"HailoRT could not load {path.name} on {device}: {exc}") from exc
        self._in_info = list(self._hef.get_input_vstream_infos())
        self._out_info = list(self._hef.get_output_vstream_infos())
        self.inputs = [TensorSpec(i.name, (1, *tuple(i.shape)), np.dtype(np.uint8)) for i in self._in_info]
        self.outputs = [TensorSpec(o.name, (1, *tuple(o.shape)), np.dtype(np.float32)) for o in self._out_info]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self._in_info):
            raise InferenceError(f"{self.path.name} takes {len(self._in_info)} inputs, got {len(inputs)}")
        feed = {
            info.name: np.ascontiguousarray(x if x.ndim == 4 else x[None], dtype=np.uint8)
            for info, x in zip(self._in_info, inputs, strict=True)
        }
        with self._lock:
            try:
                result = self._pipe.infer(feed)
            except Exception as exc:
                raise InferenceError(f"HailoRT inference on {self.device} failed: {exc}") from exc
        return [np.asarray(result[o.name]) for o in self._out_info]

    def close(self) -> None:
        with self._lock:
            self._stack.close()


class HailoBackend:
    kind = "hailo"

    def open(self, path: Path, options: OpenOptions) -> HailoSession:
        path = Path(path)
        if path.suffix != ".hef":
            raise ModelLoadError(f"{path.name} is not a .hef model: compile it with Hailo's Dataflow Compiler")
        if not path.is_file():
            raise ModelLoadError(f"{path} does not exist: run `perchd models pull`")
        return HailoSession(import_hailo(), path, options.device or "hailo0")
