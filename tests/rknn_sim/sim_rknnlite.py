"""RKNNLite's API on top of rknn-toolkit2's x86 simulator, for accelerators/rknn.py's import seam.

The simulator refuses to run a `.rknn` loaded from disk: it runs only a model converted in the same process. So
`convert()` builds the model from ONNX, exports the `.rknn` file (which the backend really opens and reads its
tensor metadata from) and registers the in-process toolkit object under that path; `SimRKNNLite.load_rknn(path)`
then finds it. Every SimRKNNLite context shares that one simulator (it is not thread-safe: a lock serialises it),
while recording its own core mask so the test can check that one context was pinned per NPU core.
"""

from __future__ import annotations

import importlib.util
import threading
import types
from pathlib import Path
from typing import Any, ClassVar


def _converter() -> Any:
    """models/rknn/convert.py (a script, not a package module), loaded by path."""
    path = Path(__file__).resolve().parents[2] / "models" / "rknn" / "convert.py"
    spec = importlib.util.spec_from_file_location("perch_rknn_convert", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def convert(onnx: Path, out: Path, target: str = "rk3588") -> Any:
    """ONNX -> fp16 RKNN for `target` with the project's converter (what `perchd models convert` runs), exported
    to `out`; returns the toolkit object, now running on the simulator and registered under `out`."""
    rknn = _converter().convert(onnx, out, target)
    if rknn.init_runtime() != 0:  # target=None: the simulator
        rknn.release()
        raise RuntimeError("rknn.init_runtime (simulator) failed")
    SimRKNNLite.models[str(out)] = rknn
    return rknn


class SimRKNNLite:
    NPU_CORE_AUTO = 0
    NPU_CORE_0 = 1
    NPU_CORE_1 = 2
    NPU_CORE_2 = 4
    NPU_CORE_0_1 = 3
    NPU_CORE_0_1_2 = 7
    NPU_CORE_ALL = 0xFFFF

    models: ClassVar[dict[str, Any]] = {}
    contexts: ClassVar[list[SimRKNNLite]] = []
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, verbose: bool = False, verbose_file: str | None = None) -> None:
        self._rknn: Any = None
        self.path: str | None = None
        self.core_mask: int | None = None
        self.runs = 0
        self.released = False
        SimRKNNLite.contexts.append(self)

    def load_rknn(self, path: str, key_path: str | None = None) -> int:
        if not Path(path).is_file() or path not in self.models:
            return -1
        self.path = path
        return 0

    def init_runtime(self, target: str | None = None, device_id: str | None = None, async_mode: bool = False,
                     core_mask: int = NPU_CORE_AUTO) -> int:
        if self.path is None:
            return -1
        if core_mask not in (self.NPU_CORE_AUTO, self.NPU_CORE_0, self.NPU_CORE_1, self.NPU_CORE_2,
                             self.NPU_CORE_0_1, self.NPU_CORE_0_1_2, self.NPU_CORE_ALL):
            return -1
        self.core_mask = core_mask
        self._rknn = self.models[self.path]
        return 0

    def inference(self, inputs: list[Any], data_type: str | None = None, data_format: Any = None,
                  inputs_pass_through: Any = None, get_frame_id: bool = False) -> list[Any] | None:
        if self._rknn is None:
            return None
        with self._lock:
            self.runs += 1
            return self._rknn.inference(inputs=inputs, data_format=data_format)

    def release(self) -> None:
        # The toolkit object is shared by every context on this model: the test releases it once at the end.
        self._rknn = None
        self.released = True


def as_module() -> tuple[types.ModuleType, types.ModuleType]:
    """(rknnlite, rknnlite.api) modules exposing SimRKNNLite as RKNNLite, for sys.modules."""
    pkg = types.ModuleType("rknnlite")
    api = types.ModuleType("rknnlite.api")
    api.RKNNLite = SimRKNNLite  # type: ignore[attr-defined]
    pkg.api = api  # type: ignore[attr-defined]
    return pkg, api
