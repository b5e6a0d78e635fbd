"""Thin stand-ins at the vendor-library seam, so the daemon's real registry, scheduler and routes serve on an NPU,
TPU or GPU on this x86 machine: `rknnlite.api.RKNNLite`, the Edge TPU delegate (ai-edge-litert's `load_delegate`
for libedgetpu), `hailo_platform`, and an onnxruntime that grants the TensorRT provider.

Each one answers with the tensors the real CPU model computes for the input it is given, so the boxes the daemon
decodes can be checked against the CPU: RKNNLite runs onnxruntime on the ONNX the .rknn was converted from; the
Edge TPU delegate makes LiteRT run the model's CPU twin (the file edgetpu_compiler started from); hailo_platform
runs the int8 YOLOv8 on LiteRT, quantising the uint8 pixels as a .hef's on-chip normalisation would; onnxruntime
claims TensorRT while its CPU provider computes. What they do not cover: the vendor runtimes themselves, drivers,
timing (tests/rknn_sim runs real RKNN numerics; tests/device/gpu.sh real TensorRT).

`Faults` is the switch for the reliability tests: `error` makes every call raise like a runtime whose device went
away, `hold` makes calls block on an event like a hung driver.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class Faults:
    def __init__(self) -> None:
        self.error: str | None = None  # raise RuntimeError(error) from every call while set
        self.hold: threading.Event | None = None  # calls wait for this event while set
        self.blocked = threading.Event()  # set once a call waits on `hold`
        self.calls = 0
        self._lock = threading.Lock()

    def check(self) -> None:
        with self._lock:
            self.calls += 1
        hold = self.hold
        if hold is not None:
            self.blocked.set()
            hold.wait()
        if self.error is not None:
            raise RuntimeError(self.error)


# ---- Rockchip NPU: rknnlite.api.RKNNLite ------------------------------------------------------------------------


class StandInRKNNLite:
    NPU_CORE_AUTO = 0
    NPU_CORE_0 = 1
    NPU_CORE_1 = 2
    NPU_CORE_2 = 4
    NPU_CORE_0_1 = 3
    NPU_CORE_0_1_2 = 7

    sources: ClassVar[dict[str, Path]] = {}  # .rknn file name -> the ONNX it was converted from
    contexts: ClassVar[list[StandInRKNNLite]] = []
    faults: ClassVar[Faults] = Faults()

    def __init__(self, verbose: bool = False, verbose_file: str | None = None) -> None:
        self.core_mask: int | None = None
        self.threads: set[int] = set()
        self.runs = 0
        self.released = False
        self._source: Path | None = None
        self._ort: Any = None
        StandInRKNNLite.contexts.append(self)

    def load_rknn(self, path: str) -> int:
        self._source = self.sources.get(Path(path).name)
        return 0 if Path(path).is_file() and self._source is not None else -1

    def init_runtime(self, target: str | None = None, device_id: str | None = None, async_mode: bool = False,
                     core_mask: int = 0) -> int:
        import onnxruntime as ort

        if self._source is None:
            return -1
        self.core_mask = core_mask
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self._ort = ort.InferenceSession(str(self._source), sess_options=opts, providers=[CPU])
        return 0

    def inference(self, inputs: list[np.ndarray], data_type: str | None = None, data_format: Any = None,
                  inputs_pass_through: Any = None, get_frame_id: bool = False) -> list[np.ndarray] | None:
        self.faults.check()
        if self._ort is None:
            return None
        self.threads.add(threading.get_ident())
        self.runs += 1
        x = inputs[0]
        if data_format == "nhwc" and x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)
        name = self._ort.get_inputs()[0].name
        return [np.asarray(o, np.float32) for o in self._ort.run(None, {name: np.ascontiguousarray(x, np.float32)})]

    def release(self) -> None:
        self._ort = None
        self.released = True


@contextmanager
def rknnlite(monkeypatch: pytest.MonkeyPatch, sources: dict[str, Path]) -> Iterator[type[StandInRKNNLite]]:
    """`from rknnlite.api import RKNNLite` gives StandInRKNNLite, fresh counters and no faults."""
    pkg, api = types.ModuleType("rknnlite"), types.ModuleType("rknnlite.api")
    api.RKNNLite = StandInRKNNLite  # type: ignore[attr-defined]
    pkg.api = api  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rknnlite", pkg)
    monkeypatch.setitem(sys.modules, "rknnlite.api", api)
    monkeypatch.setattr(StandInRKNNLite, "sources", dict(sources))
    monkeypatch.setattr(StandInRKNNLite, "contexts", [])
    monkeypatch.setattr(StandInRKNNLite, "faults", Faults())
    yield StandInRKNNLite


# ---- Coral Edge TPU: load_delegate("libedgetpu.so.1", {"device": ...}) -----------------------------------------


class StandInDelegate:
    """What load_delegate returns for libedgetpu: one per TPU the daemon opens."""

    def __init__(self, library: str, options: dict[str, str]) -> None:
        self.library = library
        self.device = options.get("device")


@contextmanager
def edgetpu(monkeypatch: pytest.MonkeyPatch, twins: dict[str, Path]) -> Iterator[tuple[list[StandInDelegate], Faults]]:
    """ai_edge_litert.interpreter with libedgetpu's delegate standing in: an interpreter given that delegate runs
    the CPU twin of the `_edgetpu.tflite` it was asked for (`twins`: file name -> twin); everything else (the CPU
    backend) is the real LiteRT."""
    from ai_edge_litert import interpreter as real

    delegates: list[StandInDelegate] = []
    faults = Faults()

    def load_delegate(library: str, options: dict[str, str] | None = None) -> Any:
        if Path(library).name.startswith("libedgetpu"):
            delegates.append(StandInDelegate(library, dict(options or {})))
            return delegates[-1]
        return real.load_delegate(library, options)

    class Interpreter:
        def __init__(self, model_path: str | None = None, num_threads: int | None = None,
                     experimental_delegates: list[Any] | None = None, **kwargs: Any) -> None:
            given = list(experimental_delegates or [])
            self._tpu = any(isinstance(d, StandInDelegate) for d in given)
            others = [d for d in given if not isinstance(d, StandInDelegate)]
            path = str(twins.get(Path(str(model_path)).name, model_path)) if self._tpu else model_path
            self._it = real.Interpreter(model_path=path, num_threads=num_threads,
                                        experimental_delegates=others or None, **kwargs)

        def invoke(self) -> None:
            if self._tpu:
                faults.check()
            self._it.invoke()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._it, name)

    mod = types.ModuleType("ai_edge_litert.interpreter")
    mod.Interpreter = Interpreter  # type: ignore[attr-defined]
    mod.load_delegate = load_delegate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", mod)
    yield delegates, faults


# ---- NVIDIA: onnxruntime with the TensorRT provider granted ------------------------------------------------------


@contextmanager
def onnxruntime_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[Any], Faults]]:
    """An onnxruntime that offers and grants TensorRT and CUDA; sessions asked for them compute on the real CPU
    provider. Yields (the provider lists sessions were asked for, faults of the "GPU" sessions)."""
    import onnxruntime as real

    requested: list[Any] = []
    faults = Faults()

    class InferenceSession(real.InferenceSession):  # type: ignore[misc]
        def __init__(self, path: str, sess_options: Any = None, providers: Any = None, **kwargs: Any) -> None:
            names = [p if isinstance(p, str) else p[0] for p in providers or []]
            self._gpu = TRT in names or CUDA in names
            if self._gpu:
                requested.append(list(providers))
            super().__init__(path, sess_options=sess_options, providers=[CPU], **kwargs)

        def get_providers(self) -> list[str]:
            return [TRT, CUDA, CPU] if self._gpu else list(super().get_providers())

        def run(self, *args: Any, **kwargs: Any) -> Any:
            if self._gpu:
                faults.check()
            return super().run(*args, **kwargs)

    mod = types.ModuleType("onnxruntime")
    mod.__getattr__ = lambda name: getattr(real, name)  # type: ignore[method-assign]  # PEP 562: the rest
    mod.InferenceSession = InferenceSession  # type: ignore[attr-defined]
    mod.get_available_providers = lambda: [TRT, CUDA, CPU]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "onnxruntime", mod)
    yield requested, faults


# ---- Hailo: hailo_platform (HailoRT's InferVStreams API) --------------------------------------------------------


@contextmanager
def hailo_platform(monkeypatch: pytest.MonkeyPatch, sources: dict[str, Path]) -> Iterator[Faults]:
    """hailo_platform whose HEF is `sources[file name]`, an int8 LiteRT model with the same output as the compiled
    network: uint8 pixels in (normalised on "chip"), float32 dequantised tensors out, batch dimension dropped from
    the vstream shapes as HailoRT reports them."""
    from ai_edge_litert.interpreter import Interpreter

    faults = Faults()

    class Info:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class HEF:
        def __init__(self, path: str) -> None:
            self.it = Interpreter(model_path=str(sources[Path(path).name]), num_threads=1)
            self.it.allocate_tensors()
            self.inp = self.it.get_input_details()[0]
            self.out = self.it.get_output_details()[0]

        def get_input_vstream_infos(self) -> list[Info]:
            return [Info("net/input_layer1", tuple(int(d) for d in self.inp["shape"][1:]))]

        def get_output_vstream_infos(self) -> list[Info]:
            return [Info("net/output", tuple(int(d) for d in self.out["shape"][1:]))]

    class Ctx:
        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    class Group:
        def __init__(self, hef: HEF) -> None:
            self.hef = hef

        def create_params(self) -> dict[str, Any]:
            return {}

        def activate(self, params: Any) -> Ctx:
            return Ctx()

    class VDevice(Ctx):
        def __init__(self, params: Any = None) -> None:
            pass

        @staticmethod
        def create_params() -> dict[str, Any]:
            return {}

        def configure(self, hef: HEF, params: Any) -> list[Group]:
            return [Group(hef)]

    class InferVStreams(Ctx):
        def __init__(self, group: Group, inp: Any, out: Any) -> None:
            self.hef = group.hef

        def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            faults.check()
            hef = self.hef
            pixels = feed["net/input_layer1"]
            assert pixels.dtype == np.uint8 and pixels.ndim == 4
            scale, zero = hef.inp["quantization"]
            info = np.iinfo(hef.inp["dtype"])
            q = np.clip(np.round(np.arange(256, dtype=np.float32) / 255.0 / scale + zero), info.min, info.max)
            hef.it.set_tensor(hef.inp["index"], np.take(q.astype(hef.inp["dtype"]), pixels))
            hef.it.invoke()
            raw = hef.it.get_tensor(hef.out["index"])
            out_scale, out_zero = hef.out["quantization"]
            return {"net/output": ((raw.astype(np.float32) - out_zero) * out_scale).astype(np.float32)}

    mod = hailo_module(HEF, VDevice, InferVStreams)
    monkeypatch.setitem(sys.modules, "hailo_platform", mod)
    yield faults


class _HailoParams:
    """hailo_platform's params factories: what the backend passes on is all a stand-in needs back."""

    @staticmethod
    def make(group: Any, format_type: str) -> str:
        return format_type

    @staticmethod
    def create_from_hef(hef: Any, interface: str) -> str:
        return interface


def hailo_module(hef: type, vdevice: type, infer_vstreams: type) -> types.ModuleType:
    """A `hailo_platform` module around stand-in HEF, VDevice and InferVStreams classes (the names the backend uses)."""
    mod = types.ModuleType("hailo_platform")
    mod.__dict__.update(
        HEF=hef, VDevice=vdevice, InferVStreams=infer_vstreams, ConfigureParams=_HailoParams,
        InputVStreamParams=_HailoParams, OutputVStreamParams=_HailoParams,
        FormatType=types.SimpleNamespace(UINT8="u8", FLOAT32="f32"),
        HailoStreamInterface=types.SimpleNamespace(PCIe="pcie"),
    )
    return mod
