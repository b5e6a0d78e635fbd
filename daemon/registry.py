"""The daemon's models: which detection model serves by default, loading on first use under the memory budget,
unloading (when idle, or least recently used to make room), and their status.

Where a model runs is placement.py, what a loaded one is loaded.py, the budget memory.py, and how `auto` chooses
the default detector autoselect.py. The names other modules import from here are re-exported below.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from ..accelerators.base import Session
from ..accelerators.probe import HardwareReport
from .config import Settings
from .loaded import LoadedModel, LoadedTask, ModelUnavailable, OpenedSessions, TaskWorker
from .manifest import Manifest, ModelEntry, ModelFileError, Variant, load_labels
from .memory import MemoryBudget, Need, Resident, default_budget_mb, estimate, give_back_heap
from .placement import Placement
from .procfs import ram_mb, rss_mb
from .scheduler import WorkerPool
from .selection import present

log = logging.getLogger("perch.models")

R = TypeVar("R", LoadedModel, LoadedTask)

__all__ = ["LoadedModel", "LoadedTask", "ModelRegistry", "ModelUnavailable", "OpenedSessions", "TaskWorker"]


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
        self.placement = Placement(settings, manifest, hardware, on_job_done)
        self.memory = MemoryBudget(settings.memory.budget_mb or default_budget_mb(ram_mb()))
        self.loaded: dict[str, LoadedModel] = {}
        self.unavailable: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._on_job_done = on_job_done
        # Non-detection tasks (faces, OCR, scene, …): one worker pool per task, loaded once on first use.
        self.tasks: dict[str, LoadedTask] = {}
        self._task_locks: dict[str, asyncio.Lock] = {}
        self._idle_timers: dict[str, asyncio.TimerHandle] = {}
        self._idle_after: dict[str, float] = {}
        # `auto`'s measured choice of the default detector (autoselect.py), once made.
        self.auto: Any = None

    # ---- which model, which accelerator ------------------------------------------------------------------------

    def candidate_kinds(self) -> list[str]:
        return self.placement.candidate_kinds()

    def variants_for(self, entry: ModelEntry, kind: str) -> list[Variant]:
        """For selection.py's reasons (perchd hardware's plan takes a registry)."""
        return self.placement.variants_for(entry, kind)

    def default_model_id(self, task: str = "detection") -> str:
        configured = self.settings.detection.model if task == "detection" else "auto"
        if configured != "auto":
            return configured
        if task == "detection" and self.auto is not None:
            return str(self.auto.model_id)
        return self.static_default(task)

    def static_default(self, task: str = "detection") -> str:
        """The manifest's model for the best accelerator that has one (what `auto` falls back to)."""
        defaults = self.manifest.defaults.get(task, {})
        for kind in self.candidate_kinds():
            model_id = defaults.get(kind)
            # An accelerator counts only when its model's file is here (RKNN/Hailo files are never downloaded).
            variants = self.placement.variants_for(self.manifest.models[model_id], kind) if model_id else []
            if variants and (kind == "cpu" or present(self.settings.model_dir, variants)):
                return model_id
        return defaults.get("cpu") or next(iter(self.manifest.by_task(task)))

    # ---- detection models ---------------------------------------------------------------------------------------

    async def get(self, model_id: str) -> LoadedModel:
        model = self.loaded.get(model_id)
        if model is not None:
            model.residency.touch()
            return model
        if model_id not in self.manifest.models:
            raise ModelUnavailable(f"unknown model {model_id!r}")
        lock = self._locks.setdefault(model_id, asyncio.Lock())
        async with lock:
            if model_id not in self.loaded:
                sessions = self.placement.workers() + (1 if self.placement.lone_threads("cpu") else 0)
                need = self.memory.need(model_id, estimate(self.manifest, {model_id: sessions}))
                # The default detector is what the appliance is for: it is loaded even past the budget (with a
                # warning) and never unloaded for room.
                enforce = model_id != self.default_model_id()
                loaded = await self._admit_and_load(model_id, need, lambda: self._load(model_id), enforce)
                loaded.reacquire = lambda: self.get(model_id)
                self.loaded[model_id] = loaded
            return self.loaded[model_id]

    def _load(self, model_id: str) -> LoadedModel:
        try:
            loaded = self.placement.load_detector(model_id)
        except ModelUnavailable as exc:
            self.unavailable[model_id] = str(exc)
            raise
        self.unavailable.pop(model_id, None)
        return loaded

    def unload(self, model_id: str) -> None:
        model = self.loaded.pop(model_id, None)
        if model is not None:
            model.residency.evicted = True
            model.close()

    # ---- task models --------------------------------------------------------------------------------------------

    def add_model(self, model_id: str, entry: ModelEntry) -> None:
        """Make a model outside the packaged manifest (a user's custom model) loadable by id."""
        self.manifest.models[model_id] = entry

    def task_workers(self) -> int:
        return self.placement.workers()

    def model_file(self, model_id: str) -> Path:
        """The verified CPU file of a model that is data rather than a Session of its own (a lexicon, dlib's landmark
        model that the dlib runtime takes in OpenOptions.extra, an ONNX file whose metadata a task reads)."""
        return self.placement.model_file(model_id)

    def labels(self, model_id: str) -> list[str]:
        try:
            return load_labels(self.manifest, self.settings.model_dir, self.manifest.models[model_id].labels)
        except ModelFileError as exc:
            raise ModelUnavailable(str(exc)) from exc

    def open_sessions(self, model_id: str, count: int, warm: Callable[[Session], object] | None = None,
                      extra: dict[str, str] | None = None) -> OpenedSessions:
        return self.placement.open_sessions(model_id, count, warm, extra)

    def task_pool(self, key: str, workers: list[TaskWorker]) -> WorkerPool:
        # A Session, or a worker holding several (faces, OCR): the pool only hands it to the job and closes it.
        return WorkerPool(key, cast(list[Session], workers), self.settings.queue.max_depth,
                          self.settings.queue.timeout_s, on_job_done=self._on_job_done)

    async def get_task(self, key: str, build: Callable[[], LoadedTask],
                       models: Mapping[str, int] | None = None) -> LoadedTask:
        """The task pool `key`, built once by `build` on a thread (model files are read and warmed there).

        `models` (model id -> Sessions the build opens) gives the budget the manifest's memory figures before the
        first load; later loads use the growth measured at the previous one.
        """
        task = self.tasks.get(key)
        if task is not None:
            task.residency.touch()
            return task
        lock = self._task_locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self.tasks:
                need = self.memory.need(key, estimate(self.manifest, models) if models else None)
                try:
                    task = await self._admit_and_load(key, need, build, enforce=True)
                except ModelUnavailable as exc:
                    self.unavailable[key] = str(exc)
                    log.error("task %s is unavailable: %s", key, exc)
                    raise
                self.unavailable.pop(key, None)
                task.reacquire = lambda: self.get_task(key, build, models)
                self.tasks[key] = task
                log.info("task %s loaded on %s (%d workers, %.0f MiB)", key, task.kind, len(task.pool.sessions),
                         task.residency.memory_mb or 0)
                if key in self._idle_after:
                    self.release_when_idle(key, self._idle_after[key])
            return self.tasks[key]

    def release_when_idle(self, key: str, after_s: float) -> None:
        """Unload task `key` once nothing has used it for `after_s` seconds (re-armed by every call).

        For models whose working memory is large (the cartoon GAN): loaded on use, given back when the appliance
        has not needed them for a while. Call on the event loop.
        """
        loop = asyncio.get_running_loop()
        self._idle_after[key] = after_s
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
        # Requests take the pool and submit to it without yielding in between, so none can be caught mid-way;
        # one that still holds the task object reloads it on its next call (LoadedTask.reacquire).
        self._detach(task)
        log.info("task %s unloaded after %.0f s unused", key, after_s)
        # Closing joins the worker threads: not on the event loop.
        threading.Thread(target=_close, args=(task,), name=f"perch-unload-{key}", daemon=True).start()

    # ---- the memory budget --------------------------------------------------------------------------------------

    async def _admit_and_load(self, key: str, need: Need, load: Callable[[], R], enforce: bool) -> R:
        async with self.memory.lock:
            if enforce:
                await self.memory.make_room(key, need, self.residents, self._evictable, self._evict)
            elif rss_mb() + need.mb > self.memory.budget_mb:
                log.warning("loading %s (about %.0f MiB) goes past memory.budget_mb (%.0f MiB): it is the default"
                            " detection model", key, need.mb, self.memory.budget_mb)
            self.memory.loads_started += 1
            before = rss_mb()
            try:
                loaded = await asyncio.to_thread(load)
            except BaseException:
                await asyncio.to_thread(give_back_heap)
                raise
            grown = max(0.0, rss_mb() - before)
            loaded.residency.memory_mb = grown
            loaded.residency.load_clock = self.memory.clock
            self.memory.measured[key] = grown
            return loaded

    def residents(self) -> list[Resident]:
        return [*self.loaded.values(), *self.tasks.values()]

    def _evictable(self, resident: Resident) -> bool:
        return not (isinstance(resident, LoadedModel) and resident.id == self.default_model_id())

    def _detach(self, resident: Resident) -> None:
        """Out of the registry (on the event loop): new requests load it again; holders reacquire."""
        resident.residency.evicted = True
        if resident.residency.memory_mb is not None:
            # Load growth plus what its requests kept: what loading it again will take.
            self.memory.measured[resident.key] = resident.residency.memory_mb
        if isinstance(resident, LoadedModel):
            self.loaded.pop(resident.id, None)
        else:
            self.tasks.pop(resident.key, None)
            timer = self._idle_timers.pop(resident.key, None)
            if timer is not None:
                timer.cancel()

    async def _evict(self, resident: Resident) -> None:
        self._detach(resident)
        await asyncio.to_thread(_close, resident)

    # ---- life cycle and status ----------------------------------------------------------------------------------

    def close(self) -> None:
        for model_id in list(self.loaded):
            self.unload(model_id)
        # Not cancelled here (this may run on a thread, timers belong to the loop): a late one finds no task.
        self._idle_timers.clear()
        for key in list(self.tasks):
            task = self.tasks.pop(key, None)  # the idle timer (on the loop) may have unloaded it meanwhile
            if task is not None:
                task.residency.evicted = True
                task.close()

    def stuck_for(self) -> float:
        pools = [p for r in self.residents() for p in r.pools()]
        return max((p.stuck_for() for p in pools), default=0.0)

    def status(self) -> list[dict[str, Any]]:
        out = [m.status() for m in self.loaded.values()]
        out += [t.status() for t in self.tasks.values()]
        out += [{"id": k, "available": False, "reason": v} for k, v in self.unavailable.items()]
        return out

    def memory_status(self) -> dict[str, Any]:
        """Budget, RSS and each loaded model's measured memory (system-status, metrics and the dashboard read it)."""
        return self.memory.status(self.residents())


def _close(resident: Resident) -> None:
    resident.close()
    give_back_heap()
