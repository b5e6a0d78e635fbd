"""Accelerator fault -> CPU twin: a model served on an NPU/TPU/GPU whose backend starts raising keeps answering.

A request whose accelerator call raises is retried on the model's CPU variant (opened on the first fault, then kept
so the next fault costs no load); the model is marked degraded with the reason (system status, MQTT diagnostics,
log) and every request goes to the CPU while the accelerator is re-probed with a warm-up inference on each of its
sessions, on a doubling backoff, and taken back as soon as all of them answer.

Only an exception raised inside the accelerator's `Session.run` is a fault: a bad image, a full queue or a timeout
fail exactly as they would on the CPU, so a client never sees an error it would not have seen there. A hung call is
not a fault either: it never returns, and the systemd watchdog restarts the daemon (daemon/core.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..accelerators.base import DEVICE_NAMES, AcceleratorError, Session
from .manifest import ModelEntry, ModelFileError, Variant, resolve
from .scheduler import LANE_REQUEST, SchedulerError, WorkerPool

if TYPE_CHECKING:
    from .config import Settings
    from .vision.detect import Detector

log = logging.getLogger("perch.failover")

T = TypeVar("T")

# First re-probe this long after a fault, doubling after every failed probe up to the maximum.
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 300.0

Job = Callable[["Detector", Session], T]


class AcceleratorFault(Exception):
    """The accelerator's Session.run raised; `error` is what it raised."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Guarded:
    """A Session whose run() reports any exception as an AcceleratorFault; everything else is the session's."""

    __slots__ = ("_session",)

    def __init__(self, session: Session) -> None:
        self._session = session

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session.run(inputs)
        except Exception as exc:  # vendor runtimes raise anything; all of it means "the accelerator failed"
            raise AcceleratorFault(exc) from exc


@dataclass
class Engine:
    """One way to run the model: a worker pool and the pre/post-processing bound to its sessions."""

    pool: WorkerPool
    detector: Detector
    file: str


OpenTwin = Callable[[Variant, Path], Any]  # (cpu variant, its path) -> an object with .pool and .detector


class Failover:
    def __init__(self, model_id: str, kind: str, primary: Engine, open_twin: Callable[[], Engine],
                 twin_file: str) -> None:
        self.model_id = model_id
        self.kind = kind
        self.primary = primary
        self.twin_file = twin_file
        self._open_twin = open_twin
        self._twin: Engine | None = None
        self._twin_lock: asyncio.Lock | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._first_s = RETRY_FIRST_S
        self._max_s = RETRY_MAX_S
        self._closed = False
        self.reason: str | None = None  # why the model is degraded; None = served by the accelerator
        self.since: float | None = None
        self.faults = 0
        self.recoveries = 0
        self.next_probe_at: float | None = None
        self.last_probe_error: str | None = None

    @property
    def degraded(self) -> bool:
        return self.reason is not None

    @property
    def twin(self) -> Engine | None:
        return self._twin

    # ---- requests ----------------------------------------------------------------------------------------------

    async def run(self, job: Job[T], lane: int = LANE_REQUEST) -> T:
        """job(detector, session) on the accelerator, or on the CPU twin while the accelerator is failing."""
        if not self.degraded:
            primary = self.primary
            try:
                return await primary.pool.submit(lambda s: job(primary.detector, _Guarded(s)), lane)
            except AcceleratorFault as fault:
                self._fault(fault)
                try:
                    twin = await self._twin_engine()
                except (ModelFileError, AcceleratorError, ValueError) as exc:
                    log.error("model %s: no CPU twin to fall back to (%s)", self.model_id, exc)
                    self._recovered(quiet=True)
                    raise fault.error from exc
                return await twin.pool.submit(lambda s: job(twin.detector, s), lane)
        twin = await self._twin_engine()
        return await twin.pool.submit(lambda s: job(twin.detector, s), lane)

    async def _twin_engine(self) -> Engine:
        if self._twin is not None:
            return self._twin
        if self._twin_lock is None:
            self._twin_lock = asyncio.Lock()
        async with self._twin_lock:
            if self._twin is None:
                # Opening reads the file and warms the interpreters: off the event loop.
                self._twin = await asyncio.to_thread(self._open_twin)
                log.info("model %s: CPU twin %s loaded for failover", self.model_id, self._twin.file)
            return self._twin

    # ---- fault and recovery ----------------------------------------------------------------------------------

    def _fault(self, fault: AcceleratorFault) -> None:
        self.faults += 1
        if self.degraded:
            return
        self._loop = asyncio.get_running_loop()
        self.reason = f"{self.kind} ({self.primary.file}) failed: {fault.error}; serving on the CPU ({self.twin_file})"
        self.since = time.time()
        log.warning("model %s degraded: %s; re-probing the accelerator in %.0f s", self.model_id, self.reason,
                    self._first_s)
        self._probe_task = self._loop.create_task(self._probe_loop(), name=f"perch-reprobe-{self.model_id}")

    def _recovered(self, quiet: bool = False) -> None:
        self.reason = None
        self.since = None
        self.next_probe_at = None
        if not quiet:
            self.recoveries += 1
            log.warning("model %s: %s answers again; taken back from the CPU", self.model_id, self.kind)

    async def _probe_loop(self) -> None:
        delay = self._first_s
        while self.degraded and not self._closed:
            self.next_probe_at = time.time() + delay
            await asyncio.sleep(delay)
            try:
                await self._probe()
            except (AcceleratorFault, SchedulerError, AcceleratorError) as exc:
                self.last_probe_error = str(exc)
                delay = min(delay * 2, self._max_s)
                log.info("model %s: %s still failing (%s); next probe in %.0f s", self.model_id, self.kind, exc,
                         delay)
                continue
            self.last_probe_error = None
            self._recovered()

    async def _probe(self) -> None:
        """A warm-up inference per accelerator session (submitted together, so each idle worker takes one)."""
        primary = self.primary
        warm = primary.detector.warmup_input()
        jobs = [primary.pool.submit(lambda s: primary.detector.run_frame(_Guarded(s), warm, 1.0))
                for _ in primary.pool.sessions]
        await asyncio.gather(*jobs)

    # ---- status and shutdown ---------------------------------------------------------------------------------

    @property
    def inference_device(self) -> str:
        return "CPU" if self.degraded else DEVICE_NAMES.get(self.kind, "CPU")

    def status(self) -> dict[str, Any]:
        next_in = max(0.0, self.next_probe_at - time.time()) if self.next_probe_at and self.degraded else None
        return {
            "degraded": self.degraded,
            "degradedReason": self.reason,
            "failover": {
                "cpuTwin": self.twin_file,
                "twinLoaded": self._twin is not None,
                "degradedSince": self.since,
                "faults": self.faults,
                "recoveries": self.recoveries,
                "nextProbeInS": round(next_in, 1) if next_in is not None else None,
                "lastProbeError": self.last_probe_error,
            },
        }

    def pools(self) -> list[WorkerPool]:
        return [self.primary.pool] + ([self._twin.pool] if self._twin is not None else [])

    def close(self) -> None:
        """Stop re-probing and close the twin; the primary pool belongs to the LoadedModel. Any thread."""
        self._closed = True
        task, loop = self._probe_task, self._loop
        if task is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        twin, self._twin = self._twin, None
        if twin is not None:
            twin.pool.close()


def attach_failover(model_id: str, kind: str, entry: ModelEntry, variant: Variant, primary: Engine, settings: Settings,
           open_cpu: OpenTwin) -> Failover | None:
    """A Failover for a model loaded on an accelerator, when the manifest gives it a CPU variant; else None.

    The Edge TPU variant's `cpu_twin` is preferred; the twin file is checked now (a missing one is logged, and the
    model then has no failover) but opened only on the first fault.
    """
    if kind == "cpu":
        return None
    cpu = [v for v in entry.variants if v.accelerator == "cpu"]
    cpu.sort(key=lambda v: v.file != variant.cpu_twin)
    for candidate in cpu:
        try:
            resolve(settings.model_dir, candidate, verify=False)
        except ModelFileError as exc:
            log.info("model %s: CPU variant %s cannot back up %s: %s", model_id, candidate.file, kind, exc)
            continue

        def open_twin(v: Variant = candidate) -> Engine:
            twin = open_cpu(v, resolve(settings.model_dir, v, verify=settings.verify_models))
            return Engine(twin.pool, twin.detector, v.file)

        return Failover(model_id, kind, primary, open_twin, candidate.file)
    log.warning("model %s on %s has no CPU variant on disk: an accelerator fault will fail requests", model_id, kind)
    return None
