"""What the registry hands out: a loaded detection model or task pool, ready to run on its worker threads.

Either may be unloaded while a request still holds it (evicted for the memory budget, or unloaded when idle):
such a holder reloads it through `reacquire` on its next call instead of failing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from ..accelerators.base import DEVICE_NAMES, Session
from .failover import Failover, Job
from .manifest import ModelEntry, Variant
from .metrics.latency import LatencyHistogram
from .procfs import rss_mb
from .scheduler import LANE_REQUEST, WorkerPool
from .vision.detect import NMS_IOU, Detector, DetectResult

T = TypeVar("T")


class ModelUnavailable(Exception):
    """The model cannot serve: missing/corrupt file, unknown id, or every accelerator failed. Message says why."""


@dataclass
class Residency:
    """Bookkeeping the memory budget reads: measured cost, last use, and whether it was unloaded."""

    # RSS growth measured while it loaded (sessions opened and warmed), plus what its requests kept (buffers sized
    # for real inputs): the estimate for its next load once it is unloaded.
    memory_mb: float | None = None
    last_used: float = field(default_factory=time.monotonic)
    evicted: bool = False
    # The budget's (loads started, a load or unload running now), set when it loads this. A model that loads or
    # unloads while a request runs moves RSS by far more than the request: that growth is the other model's, and
    # counting it here too would inflate this estimate at every overlap until, months on, it no longer fits.
    load_clock: Callable[[], tuple[int, bool]] | None = None

    def touch(self) -> None:
        self.last_used = time.monotonic()

    async def tracked(self, work: Awaitable[T]) -> T:
        """Await `work` (a job on this model's pool) and add the RSS it kept to memory_mb. Other requests running
        at the same time can still over-count, which errs on the safe side (an earlier unload, never an OOM)."""
        clock = self.load_clock() if self.load_clock is not None else None
        before = rss_mb()
        result = await work
        kept = rss_mb() - before
        quiet = clock is None or (not clock[1] and self.load_clock is not None and self.load_clock() == clock)
        if kept > 1.0 and self.memory_mb is not None and quiet:
            self.memory_mb += kept
        return result


@dataclass
class LoadedModel:
    id: str
    entry: ModelEntry
    variant: Variant
    path: Path
    kind: str  # accelerator kind really used
    pool: WorkerPool
    detector: Detector
    fallback_reasons: list[str] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    loaded_at: float = field(default_factory=time.time)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # read by /metrics
    # Accelerator fault -> CPU twin (daemon/failover.py); None on the CPU or without a CPU variant.
    failover: Failover | None = None
    residency: Residency = field(default_factory=Residency)
    reacquire: Callable[[], Awaitable[LoadedModel]] | None = None

    @property
    def key(self) -> str:
        return self.id

    @property
    def inference_device(self) -> str:
        """What CodeProject.AI clients read in `inferenceDevice`."""
        if self.failover is not None and self.failover.degraded:
            return "CPU"
        name = DEVICE_NAMES.get(self.kind, "CPU")
        if self.kind == "edgetpu" and len(self.pool.sessions) > 1:
            return "Multi-TPU"
        return name

    def record(self, result: DetectResult) -> None:
        self.latency.observe_ms(result.inference_ms)
        self.inference_ms.append(result.inference_ms)
        if len(self.inference_ms) > 200:
            del self.inference_ms[:100]

    async def _submit(self, job: Job[DetectResult], lane: int) -> DetectResult:
        if self.failover is not None:
            return await self.failover.run(job, lane)
        det = self.detector
        return await self.pool.submit(lambda s: job(det, s), lane)

    def close(self) -> None:
        """Stop its workers and free its sessions (and its CPU twin's); joins threads: not on the event loop."""
        if self.failover is not None:
            self.failover.close()
        self.pool.close()

    def pools(self) -> list[WorkerPool]:
        return self.failover.pools() if self.failover is not None else [self.pool]

    async def _current(self) -> LoadedModel:
        if self.residency.evicted and self.reacquire is not None:
            return await self.reacquire()
        self.residency.touch()
        return self

    async def detect_bytes(self, data: bytes, min_confidence: float, max_pixels: int,
                           lane: int = LANE_REQUEST, iou: float = NMS_IOU) -> DetectResult:
        model = await self._current()
        result = await model.residency.tracked(
            model._submit(lambda det, s: det.run_bytes(s, data, min_confidence, max_pixels, iou), lane))
        model.record(result)
        return result

    async def detect_frame(self, bgr: np.ndarray, min_confidence: float, lane: int = LANE_REQUEST,
                           iou: float = NMS_IOU) -> DetectResult:
        model = await self._current()
        result = await model.residency.tracked(
            model._submit(lambda det, s: det.run_frame(s, bgr, min_confidence, iou), lane))
        model.record(result)
        return result

    def status(self) -> dict[str, Any]:
        recent = self.inference_ms[-100:]
        return {
            "id": self.id,
            "name": self.entry.name,
            "task": self.entry.task,
            "file": self.variant.file,
            "accelerator": self.kind,
            "inferenceDevice": self.inference_device,
            "devices": [s.device for s in self.pool.sessions],
            "loneSession": self.pool.lone is not None,
            "fallbackReasons": self.fallback_reasons,
            "averageInferenceMs": round(sum(recent) / len(recent), 2) if recent else None,
            "memoryMB": _mb(self.residency.memory_mb),
            **self.pool.snapshot(),
            **(self.failover.status() if self.failover is not None else {}),
        }


class TaskWorker(Protocol):
    """What one worker thread of a task pool holds: a Session, or an object holding one Session per model of a
    multi-model task (faces, OCR) or per-thread helpers (text); not thread-safe."""

    device: str

    def close(self) -> None: ...


@dataclass
class OpenedSessions:
    model_id: str
    kind: str
    path: Path
    sessions: list[Session]
    fallback_reasons: list[str]


@dataclass
class LoadedTask:
    """A loaded non-detection task: a worker pool, the accelerator it runs on and the files it uses."""

    key: str
    pool: WorkerPool
    kind: str
    files: list[str]
    fallback_reasons: list[str] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    # The task's front object (e.g. vision.faces.FaceTask), built with the pool; what routes call.
    engine: Any = None
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # read by /metrics
    residency: Residency = field(default_factory=Residency)
    reacquire: Callable[[], Awaitable[LoadedTask]] | None = None

    @property
    def inference_device(self) -> str:
        return DEVICE_NAMES.get(self.kind, "CPU")

    async def run(self, fn: Callable[[Any], T], lane: int = LANE_REQUEST) -> T:
        """fn(worker) on one of the pool's threads; inference never runs on the event loop."""
        task = self
        if self.residency.evicted and self.reacquire is not None:
            # Unloaded since the caller got it: fn only needs a worker of the same kind, which the reload has.
            task = await self.reacquire()
        task.residency.touch()
        return await task.residency.tracked(task.pool.submit(fn, lane))

    def record(self, ms: float) -> None:
        self.latency.observe_ms(ms)
        self.inference_ms.append(ms)
        if len(self.inference_ms) > 200:
            del self.inference_ms[:100]

    def close(self) -> None:
        self.pool.close()

    def pools(self) -> list[WorkerPool]:
        return [self.pool]

    def status(self) -> dict[str, Any]:
        recent = self.inference_ms[-100:]
        return {
            "id": self.key,
            "task": self.key,
            "files": self.files,
            "accelerator": self.kind,
            "inferenceDevice": self.inference_device,
            "devices": [getattr(s, "device", "cpu") for s in self.pool.sessions],
            "fallbackReasons": self.fallback_reasons,
            "averageInferenceMs": round(sum(recent) / len(recent), 2) if recent else None,
            "memoryMB": _mb(self.residency.memory_mb),
            **self.pool.snapshot(),
        }


def _mb(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
