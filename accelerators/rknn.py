"""Rockchip NPU backend: a `.rknn` model through RKNNLite (rknn-toolkit-lite2 + librknnrt).

One Session = one RKNNLite context pinned to one NPU core (`OpenOptions.device = "npu-core:N"`): contexts are not
thread-safe, and on RK3588 three single-core contexts driven by three worker threads give more throughput than one
context spread over all cores. The daemon opens one Session per core listed by the probe and its scheduler spreads
requests over them. RKNNLite reports failure with return codes and None results; they become exceptions here.

`rknnlite` is imported only inside `open()` (through `import_rknnlite`, the seam the simulator test replaces).
"""

from __future__ import annotations

import ast
import contextlib
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendUnavailable, InferenceError, ModelLoadError, OpenOptions, TensorSpec

# RKNNLite.NPU_CORE_* values; kept here so device strings can be validated without the library.
NPU_CORE_AUTO = 0
NPU_CORE_MASKS: tuple[int, ...] = (1, 2, 4)  # NPU_CORE_0, NPU_CORE_1, NPU_CORE_2
NPU_CORE_0_1_2 = 7


def import_rknnlite() -> Any:
    """The RKNNLite class. Tests inject an adapter by putting a module named `rknnlite.api` in sys.modules."""
    try:
        from rknnlite.api import RKNNLite
    except ImportError as exc:
        raise BackendUnavailable(
            f"rknnlite is not importable ({exc}): pip install 'perchd[rknn]' (rknn-toolkit-lite2, aarch64, "
            "Python 3.8-3.12) and install librknnrt.so of the same version"
        ) from exc
    return RKNNLite


def core_mask(device: str | None, lite: Any = None) -> int:
    """"npu-core:N" -> that core's mask; None/"npu" -> auto; "npu-core:all" -> all three cores (RK3588)."""
    get = (lambda name, default: getattr(lite, name, default)) if lite is not None else (lambda _n, d: d)
    if device in (None, "", "npu", "npu-core:auto"):
        return int(get("NPU_CORE_AUTO", NPU_CORE_AUTO))
    if device == "npu-core:all":
        return int(get("NPU_CORE_0_1_2", NPU_CORE_0_1_2))
    m = re.fullmatch(r"npu-core:(\d+)", device)
    if not m or int(m.group(1)) >= len(NPU_CORE_MASKS):
        raise BackendUnavailable(f"unknown RKNN device {device!r}: expected npu-core:0, npu-core:1 or npu-core:2")
    idx = int(m.group(1))
    return int(get(f"NPU_CORE_{idx}", NPU_CORE_MASKS[idx]))


def read_rknn_metadata(path: Path) -> dict[str, Any] | None:
    """Tensor attributes that rknn-toolkit2 (2.x) stores in the .rknn file, or None.

    RKNNLite has no query API for tensor shapes, but the converter writes a length-prefixed Python-literal dict
    {'attrs': {name: {'idx', 'shape', 'layout', 'dtype', 'is_output', ...}}, 'quant_tab': ...} near the start of
    the file. Best effort: an unknown layout gives None and the Session falls back to shapes it learns on first run.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4 << 20)
    except OSError:
        return None
    start = head.find(b"{'attrs':")
    if start < 4:
        return None
    length = int.from_bytes(head[start - 4 : start], "little")
    blob = head[start : start + length] if 0 < length < len(head) else b""
    try:
        meta = ast.literal_eval(blob.decode("utf-8"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        return None
    return meta if isinstance(meta, dict) and isinstance(meta.get("attrs"), dict) else None


def _specs(meta: dict[str, Any] | None) -> tuple[list[TensorSpec], list[TensorSpec], list[str]]:
    """(inputs, outputs, input layouts) from the metadata; RKNNLite returns float32 (dequantised) outputs."""
    if not meta:
        return [], [], []
    ins: list[tuple[int, TensorSpec, str]] = []
    outs: list[tuple[int, TensorSpec]] = []
    for name, attr in meta["attrs"].items():
        if not isinstance(attr, dict) or "shape" not in attr:
            continue
        spec = TensorSpec(name=str(name), shape=tuple(int(d) for d in attr["shape"]), dtype=np.dtype(np.float32))
        idx = int(attr.get("idx", 0))
        if attr.get("is_output"):
            outs.append((idx, spec))
        else:
            ins.append((idx, spec, str(attr.get("layout", "nhwc")).lower()))
    ins.sort(key=lambda x: x[0])
    outs.sort(key=lambda x: x[0])
    return [s for _, s, _ in ins], [s for _, s in outs], [lay for _, _, lay in ins]


class RKNNSession:
    """One RKNNLite context on one NPU core. Not thread-safe by design; the lock only turns misuse into waiting."""

    kind = "rknn"

    def __init__(self, lite: Any, device: str, path: Path, meta: dict[str, Any] | None) -> None:
        self._lite = lite
        self.device = device
        self.path = path
        self.inputs, self.outputs, self._layouts = _specs(meta)
        self._known = bool(self.inputs)
        if not self._known:
            # No metadata: RKNNLite accepts float32 for any model (it quantises on the way in), so a shapeless
            # float32 spec is a safe promise for pre-processing; the layout is guessed per call.
            self.inputs = [TensorSpec("input0", (), np.dtype(np.float32))]
            self._layouts = ["unknown"]
        self._lock = threading.Lock()

    def _data_format(self, inputs: Sequence[np.ndarray]) -> str | list[str]:
        """RKNNLite assumes NHWC for 4-D inputs; a model converted from an NCHW ONNX graph may be fed either way."""
        formats = []
        for i, x in enumerate(inputs):
            spec = self.inputs[i] if i < len(self.inputs) else None
            if not self._known:
                # Images have 1 or 3 channels: [1,3,H,W] is NCHW unless it is also [1,H,W,3]-shaped.
                nchw = x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[3] not in (1, 3)
            else:
                # NCHW exactly when the array has the declared NCHW shape; anything else is handed over as NHWC.
                nchw = x.ndim == 4 and spec is not None and self._layouts[i] == "nchw" and tuple(x.shape) == spec.shape
            formats.append("nchw" if nchw else "nhwc")
        return formats[0] if len(formats) == 1 else formats

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        lite = self._lite
        if lite is None:
            raise InferenceError(f"RKNN session for {self.path.name} on {self.device} is closed")
        if self._known and len(inputs) != len(self.inputs):
            raise InferenceError(f"{self.path.name} takes {len(self.inputs)} inputs, got {len(inputs)}")
        arrays = [np.ascontiguousarray(x) for x in inputs]
        with self._lock:
            try:
                outputs = lite.inference(inputs=arrays, data_format=self._data_format(arrays))
            except Exception as exc:  # the runtime raises bare Exceptions from its C extension
                raise InferenceError(f"RKNN inference on {self.device} failed: {exc}") from exc
        if outputs is None:
            # RKNNLite logs the real cause itself and returns None.
            raise InferenceError(
                f"RKNN inference on {self.device} returned no outputs for {self.path.name} (see the rknnlite log "
                "above; a shape/dtype mismatch or an NPU driver error)"
            )
        result = [np.asarray(o) for o in outputs]
        if not self.outputs:
            # No metadata: learn the output specs from the first real run.
            self.outputs = [TensorSpec(f"output{i}", tuple(o.shape), o.dtype) for i, o in enumerate(result)]
        return result

    def close(self) -> None:
        lite, self._lite = self._lite, None
        if lite is not None:
            # Release during shutdown must never mask the error that led to it.
            with contextlib.suppress(Exception):
                lite.release()


class RKNNBackend:
    kind = "rknn"

    def __init__(self, lite_cls: Any = None) -> None:
        self._lite_cls = lite_cls

    def open(self, path: Path, options: OpenOptions) -> RKNNSession:
        path = Path(path)
        if path.suffix != ".rknn":
            raise ModelLoadError(f"{path.name} is not an .rknn model: convert it with rknn-toolkit2 "
                                 "(see models/rknn/README.md)")
        if not path.is_file():
            raise ModelLoadError(f"{path} does not exist: run `perchd models pull`")
        lite_cls = self._lite_cls or import_rknnlite()
        mask = core_mask(options.device, lite_cls)
        device = options.device or "npu"
        try:
            lite = lite_cls(verbose=False)
        except Exception as exc:
            raise BackendUnavailable(f"RKNNLite could not start: {exc}") from exc
        ret = lite.load_rknn(str(path))
        if ret != 0:
            lite.release()
            raise ModelLoadError(f"RKNNLite.load_rknn({path.name}) returned {ret}: the file is not a valid .rknn")
        try:
            ret = lite.init_runtime(core_mask=mask)
        except Exception as exc:
            lite.release()
            raise ModelLoadError(f"RKNN runtime init failed for {path.name} on {device}: {exc}") from exc
        if ret != 0:
            lite.release()
            raise ModelLoadError(
                f"RKNN runtime init failed for {path.name} on {device} (ret={ret}): check that the model was "
                "converted for this SoC (target_platform), that librknnrt.so matches rknn-toolkit-lite2's version, "
                "and that the service user may open the NPU node (group 'render')"
            )
        return RKNNSession(lite, device, path, read_rknn_metadata(path))
