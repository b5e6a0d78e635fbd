"""Loads models: picks the best usable accelerator with a variant, opens one Session per worker, warms it up,
and falls back (finally to the CPU) with the reason recorded for the log and the status routes."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import numpy as np

from ..accelerators.base import (
    DEVICE_NAMES,
    KINDS,
    AcceleratorError,
    OpenOptions,
    Session,
    backend_for_file,
    get_backend,
)
from ..accelerators.probe import HardwareReport
from .config import Settings
from .failover import Engine, Failover, Job, attach_failover
from .manifest import Manifest, ModelEntry, ModelFileError, Variant, load_labels, resolve
from .metrics.latency import LatencyHistogram
from .scheduler import LANE_REQUEST, WorkerPool
from .selection import no_model_reason, present
from .vision.detect import NMS_IOU, Detector, DetectResult

log = logging.getLogger("perch.models")

T = TypeVar("T")


class ModelUnavailable(Exception):
    """The model cannot serve: missing/corrupt file, unknown id, or every accelerator failed. Message says why."""


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

    async def detect_bytes(self, data: bytes, min_confidence: float, max_pixels: int,
                           lane: int = LANE_REQUEST, iou: float = NMS_IOU) -> DetectResult:
        result = await self._submit(lambda det, s: det.run_bytes(s, data, min_confidence, max_pixels, iou), lane)
        self.record(result)
        return result

    async def detect_frame(self, bgr: np.ndarray, min_confidence: float, lane: int = LANE_REQUEST,
                           iou: float = NMS_IOU) -> DetectResult:
        result = await self._submit(lambda det, s: det.run_frame(s, bgr, min_confidence, iou), lane)
        self.record(result)
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
            "fallbackReasons": self.fallback_reasons,
            "averageInferenceMs": round(sum(recent) / len(recent), 2) if recent else None,
            **self.pool.snapshot(),
            **(self.failover.status() if self.failover is not None else {}),
        }


class ModelRegistry:
    def __init__(
        self,
        settings: Settings,
        manifest: Manifest,
        hardware: HardwareReport,
        on_job_done: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.manifest = manifest
        self.hardware = hardware
        self.loaded: dict[str, LoadedModel] = {}
        self.unavailable: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._on_job_done = on_job_done
        # Non-detection tasks (faces, OCR, scene, …): one worker pool per task, loaded once on first use.
        self.tasks: dict[str, LoadedTask] = {}
        self._task_locks: dict[str, asyncio.Lock] = {}
        self._idle_timers: dict[str, asyncio.TimerHandle] = {}

    # ---- which model, which accelerator ------------------------------------------------------------------------

    def candidate_kinds(self) -> list[str]:
        """Accelerators to try, best first; a forced one first even if the probe says unusable (it then falls back)."""
        usable = [k for k in KINDS if k != "cpu" and k in self.hardware.usable_kinds()]
        forced = self.settings.accelerator
        if forced == "auto":
            return [*usable, "cpu"]
        return [forced] if forced == "cpu" else [forced, "cpu"]

    def default_model_id(self, task: str = "detection") -> str:
        configured = self.settings.detection.model if task == "detection" else "auto"
        if configured != "auto":
            return configured
        defaults = self.manifest.defaults.get(task, {})
        for kind in self.candidate_kinds():
            model_id = defaults.get(kind)
            # An accelerator counts only when its model's file is here (RKNN/Hailo files are never downloaded).
            variants = self._variants_for(self.manifest.models[model_id], kind) if model_id else []
            if variants and (kind == "cpu" or present(self.settings.model_dir, variants)):
                return model_id
        return defaults.get("cpu") or next(iter(self.manifest.by_task(task)))

    def _variants_for(self, entry: ModelEntry, kind: str) -> list[Variant]:
        soc = (self.hardware.board.soc or "").lower()
        return [
            v for v in entry.variants
            if v.accelerator == kind and (not v.soc or kind != "rknn" or soc in v.soc)
        ]

    def _devices(self, kind: str) -> list[str | None]:
        if kind == "cpu":
            workers = self.settings.cpu.workers or max(1, self.hardware.board.cores)
            return [None] * workers
        report = self.hardware.get(kind)
        return list(report.devices) if report and report.devices else [None]

    # ---- loading ----------------------------------------------------------------------------------------------

    async def get(self, model_id: str) -> LoadedModel:
        if model_id in self.loaded:
            return self.loaded[model_id]
        if model_id not in self.manifest.models:
            raise ModelUnavailable(f"unknown model {model_id!r}")
        lock = self._locks.setdefault(model_id, asyncio.Lock())
        async with lock:
            if model_id not in self.loaded:
                # Loading reads files and warms the runtime: keep it off the event loop.
                self.loaded[model_id] = await asyncio.to_thread(self._load, model_id)
            return self.loaded[model_id]

    def _load(self, model_id: str) -> LoadedModel:
        entry = self.manifest.models[model_id]
        reasons: list[str] = []
        try:
            labels = load_labels(self.manifest, self.settings.model_dir, entry.labels)
        except ModelFileError as exc:
            self.unavailable[model_id] = str(exc)
            raise ModelUnavailable(str(exc)) from exc
        for kind in self.candidate_kinds():
            variants = self._variants_for(entry, kind)
            if not variants:
                if kind != "cpu":
                    reasons.append(no_model_reason(self, kind, model_id))
                continue
            report = self.hardware.get(kind)
            if kind != "cpu" and report is not None and not report.usable:
                reasons.append(f"{kind}: {report.reason}")
                continue
            for variant in variants:
                try:
                    path = resolve(self.settings.model_dir, variant, verify=self.settings.verify_models)
                    loaded = self._open(model_id, entry, variant, path, kind, labels)
                except (ModelFileError, AcceleratorError, ValueError) as exc:
                    reasons.append(f"{kind} ({variant.file}): {exc}")
                    log.warning("model %s: %s variant %s failed: %s", model_id, kind, variant.file, exc)
                    continue
                loaded.fallback_reasons = reasons
                loaded.failover = attach_failover(
                    model_id, kind, entry, variant, Engine(loaded.pool, loaded.detector, variant.file),
                    self.settings, lambda v, p: self._open(model_id, entry, v, p, "cpu", labels))
                if reasons:
                    log.warning("model %s runs on %s after falling back: %s", model_id, kind, "; ".join(reasons))
                log.info("model %s loaded on %s (%s, %d workers)", model_id, kind, variant.file,
                         len(loaded.pool.sessions))
                self.unavailable.pop(model_id, None)
                return loaded
        reason = "; ".join(reasons) or f"model {model_id} has no variant this machine can run"
        self.unavailable[model_id] = reason
        raise ModelUnavailable(reason)

    def _open(self, model_id: str, entry: ModelEntry, variant: Variant, path: Path, kind: str,
              labels: list[str]) -> LoadedModel:
        backend = get_backend(backend_for_file(kind, path, variant.runtime))
        sessions: list[Session] = []
        try:
            for device in self._devices(kind):
                options = OpenOptions(
                    threads=self.settings.cpu.threads, device=device, cache_dir=self.settings.cache_dir,
                    sha256=variant.sha256,
                )
                sessions.append(backend.open(path, options))
            if entry.input is None or entry.decoder is None:
                raise ValueError(f"model {model_id} has no input spec or decoder in the manifest")
            detector = Detector(entry.input, entry.decoder, labels, sessions[0])
            # Warm every session with one inference: first-inference failures (delegates, drivers) show here.
            for s in sessions:
                detector.run_frame(s, detector.warmup_input(), 1.0)
        except BaseException:
            for s in sessions:
                s.close()
            raise
        pool = WorkerPool(model_id, sessions, self.settings.queue.max_depth, self.settings.queue.timeout_s,
                          on_job_done=self._on_job_done)
        return LoadedModel(model_id, entry, variant, path, kind, pool, detector)

    def unload(self, model_id: str) -> None:
        model = self.loaded.pop(model_id, None)
        if model is not None:
            if model.failover is not None:
                model.failover.close()
            model.pool.close()

    def close(self) -> None:
        for model_id in list(self.loaded):
            self.unload(model_id)
        # Not cancelled here (this may run on a thread, timers belong to the loop): a late one finds no task.
        self._idle_timers.clear()
        for key in list(self.tasks):
            task = self.tasks.pop(key, None)  # the idle timer (on the loop) may have unloaded it meanwhile
            if task is not None:
                task.pool.close()

    def stuck_for(self) -> float:
        pools = [p for m in self.loaded.values() for p in (m.failover.pools() if m.failover else [m.pool])]
        pools += [t.pool for t in self.tasks.values()]
        return max((p.stuck_for() for p in pools), default=0.0)

    def status(self) -> list[dict[str, Any]]:
        out = [m.status() for m in self.loaded.values()]
        out += [t.status() for t in self.tasks.values()]
        out += [{"id": k, "available": False, "reason": v} for k, v in self.unavailable.items()]
        return out

    # ---- non-detection tasks -------------------------------------------------------------------------------

    def add_model(self, model_id: str, entry: ModelEntry) -> None:
        """Make a model outside the packaged manifest (a user's custom model) loadable by id."""
        self.manifest.models[model_id] = entry

    def task_workers(self) -> int:
        return self.settings.cpu.workers or max(1, self.hardware.board.cores)

    def model_file(self, model_id: str) -> Path:
        """The verified CPU file of a model that is data rather than a Session of its own (a lexicon, dlib's landmark
        model that the dlib runtime takes in OpenOptions.extra, an ONNX file whose metadata a task reads)."""
        entry = self.manifest.models.get(model_id)
        if entry is None:
            raise ModelUnavailable(f"unknown model {model_id!r}")
        variants = [v for v in entry.variants if v.accelerator == "cpu"]
        if not variants:
            raise ModelUnavailable(f"model {model_id} has no CPU file")
        try:
            return resolve(self.settings.model_dir, variants[0], verify=self.settings.verify_models)
        except ModelFileError as exc:
            raise ModelUnavailable(str(exc)) from exc

    def labels(self, model_id: str) -> list[str]:
        try:
            return load_labels(self.manifest, self.settings.model_dir, self.manifest.models[model_id].labels)
        except ModelFileError as exc:
            raise ModelUnavailable(str(exc)) from exc

    def open_sessions(self, model_id: str, count: int, warm: Callable[[Session], object] | None = None,
                      extra: dict[str, str] | None = None) -> OpenedSessions:
        """`count` Sessions of one model on the best accelerator that has a variant, falling back like detection.

        `warm` runs once per session inside the attempt, so a delegate that loads but cannot run falls back too.
        `extra` goes to the backend as OpenOptions.extra (e.g. the dlib runtime's landmark model path).
        """
        entry = self.manifest.models.get(model_id)
        if entry is None:
            raise ModelUnavailable(f"unknown model {model_id!r}")
        reasons: list[str] = []
        for kind in self.candidate_kinds():
            report = self.hardware.get(kind)
            variants = self._variants_for(entry, kind)
            if kind != "cpu" and variants and report is not None and not report.usable:
                reasons.append(f"{kind}: {report.reason}")
                continue
            devices = self._devices(kind)
            for variant in variants:
                sessions: list[Session] = []
                try:
                    path = resolve(self.settings.model_dir, variant, verify=self.settings.verify_models)
                    backend = get_backend(backend_for_file(kind, path, variant.runtime))
                    for i in range(count):
                        options = OpenOptions(threads=self.settings.cpu.threads, device=devices[i % len(devices)],
                                              cache_dir=self.settings.cache_dir, sha256=variant.sha256,
                                              extra=dict(extra or {}))
                        sessions.append(backend.open(path, options))
                        if warm is not None:
                            warm(sessions[-1])
                except (ModelFileError, AcceleratorError, ValueError) as exc:
                    for s in sessions:
                        s.close()
                    reasons.append(f"{kind} ({variant.file}): {exc}")
                    log.warning("model %s: %s variant %s failed: %s", model_id, kind, variant.file, exc)
                    continue
                return OpenedSessions(model_id, kind, path, sessions, reasons)
        raise ModelUnavailable("; ".join(reasons) or f"model {model_id} has no variant this machine can run")

    def task_pool(self, key: str, workers: list[TaskWorker]) -> WorkerPool:
        # A Session, or a worker holding several (faces, OCR): the pool only hands it to the job and closes it.
        return WorkerPool(key, cast(list[Session], workers), self.settings.queue.max_depth,
                          self.settings.queue.timeout_s, on_job_done=self._on_job_done)

    async def get_task(self, key: str, build: Callable[[], LoadedTask]) -> LoadedTask:
        """The task pool `key`, built once by `build` on a thread (model files are read and warmed there)."""
        task = self.tasks.get(key)
        if task is not None:
            return task
        lock = self._task_locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self.tasks:
                try:
                    self.tasks[key] = await asyncio.to_thread(build)
                except ModelUnavailable as exc:
                    self.unavailable[key] = str(exc)
                    log.error("task %s is unavailable: %s", key, exc)
                    raise
                self.unavailable.pop(key, None)
                task = self.tasks[key]
                log.info("task %s loaded on %s (%d workers)", key, task.kind, len(task.pool.sessions))
            return self.tasks[key]


    def release_when_idle(self, key: str, after_s: float) -> None:
        """Unload task `key` once nothing has used it for `after_s` seconds (re-armed by every call).

        For models whose working memory is large (the cartoon GAN holds ~400 MB of activations): loaded on use,
        given back when the appliance has not needed them for a while. Call on the event loop.
        """
        loop = asyncio.get_running_loop()
        old = self._idle_timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._idle_timers[key] = loop.call_later(after_s, self._release_idle, key, after_s)

    def _release_idle(self, key: str, after_s: float) -> None:
        self._idle_timers.pop(key, None)
        task = self.tasks.get(key)
        if task is None:
            return
        if task.pool.depth or any(t is not None for t in task.pool.busy_since):
            self.release_when_idle(key, after_s)
            return
        # Requests take the pool and submit to it without yielding in between, so none can be caught mid-way.
        del self.tasks[key]
        log.info("task %s unloaded after %.0f s unused", key, after_s)
        # Closing joins the worker threads: not on the event loop.
        threading.Thread(target=task.pool.close, name=f"perch-unload-{key}", daemon=True).start()


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

    @property
    def inference_device(self) -> str:
        return DEVICE_NAMES.get(self.kind, "CPU")

    async def run(self, fn: Callable[[Any], T], lane: int = LANE_REQUEST) -> T:
        """fn(worker) on one of the pool's threads; inference never runs on the event loop."""
        return await self.pool.submit(fn, lane)

    def record(self, ms: float) -> None:
        self.latency.observe_ms(ms)
        self.inference_ms.append(ms)
        if len(self.inference_ms) > 200:
            del self.inference_ms[:100]

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
            **self.pool.snapshot(),
        }
