"""Per-model worker pools: bounded queues, one Session per worker thread, asyncio futures, backpressure, stats.

Why threads: TFLite's invoke, onnxruntime's run and OpenCV's decode/resize release the GIL, so one worker per core
runs truly in parallel while the event loop stays free for HTTP. Interpreters are not thread-safe, hence one Session
per worker. Two lanes (interactive requests, camera frames) share the workers so that neither starves the other.

Latency-adaptive: a pool may also hold a `lone` Session that uses every core. A job that finds nothing queued behind
it and no other job running takes it, so the common case of one camera server sending one request at a time gets
all cores (a 1-thread interpreter leaves the others idle); under load every worker runs its own 1-thread Session,
which gives the most images per second. Thread counts of LiteRT (XNNPACK) and onnxruntime are fixed when a model is
opened, so this needs its own interpreter rather than a per-call setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..accelerators.base import Session

log = logging.getLogger("perch.scheduler")

T = TypeVar("T")

LANE_REQUEST = 0
LANE_CAMERA = 1
# After this many request jobs in a row, a waiting camera job goes next.
_CAMERA_SHARE = 3


class SchedulerError(Exception):
    pass


class QueueFull(SchedulerError):
    """Backpressure: the model's queue is at its limit; the caller answers at once instead of hanging."""


class QueueTimeout(SchedulerError):
    """The job waited longer than the configured timeout."""


class PoolClosed(SchedulerError):
    pass


@dataclass(eq=False)
class _Job(Generic[T]):
    fn: Callable[[Session], T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop
    enqueued: float
    deadline: float


@dataclass
class PoolStats:
    processed: int = 0
    failed: int = 0
    rejected: int = 0
    timed_out: int = 0
    lone: int = 0  # jobs run alone on the all-core Session
    busy_ms_total: float = 0.0
    recent_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200))

    def average_ms(self) -> float:
        return sum(self.recent_ms) / len(self.recent_ms) if self.recent_ms else 0.0


class WorkerPool:
    def __init__(
        self,
        name: str,
        sessions: list[Session],
        max_depth: int = 32,
        timeout_s: float = 10.0,
        on_job_done: Callable[[], None] | None = None,
        lone: Session | None = None,
    ) -> None:
        if not sessions:
            raise ValueError("a worker pool needs at least one session")
        self.name = name
        self.sessions = sessions
        # The all-core Session for a job that runs alone (None: every job runs on its worker's own Session).
        self.lone = lone
        self.max_depth = max_depth
        self.timeout_s = timeout_s
        self.stats = PoolStats()
        self._lanes: tuple[deque[_Job[Any]], deque[_Job[Any]]] = (deque(), deque())
        self._cv = threading.Condition()
        # One wake-up condition per worker on the shared lock, and a stack of idle workers: the most recently
        # idle worker takes the next job, so at low load one interpreter with warm caches does the work instead
        # of the workers taking turns (about 1 ms per image on a 2-core board).
        self._wake = [threading.Condition(self._cv) for _ in sessions]
        self._idle: list[int] = []
        self._closed = False
        self._streak = 0
        self._running = 0  # jobs being run now, counted under the lock
        self._on_job_done = on_job_done
        # Per worker: monotonic time it entered its current job (None when idle); the watchdog reads it.
        self.busy_since: list[float | None] = [None] * len(sessions)
        self._threads = [
            threading.Thread(target=self._work, args=(i, s), name=f"perch-{name}-{i}", daemon=True)
            for i, s in enumerate(sessions)
        ]
        for t in self._threads:
            t.start()

    # ---- event-loop side -------------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._lanes[0]) + len(self._lanes[1])

    async def submit(self, fn: Callable[[Session], T], lane: int = LANE_REQUEST, timeout_s: float | None = None) -> T:
        """Run fn(session) on a worker; raises QueueFull at once when the queue is at its limit."""
        loop = asyncio.get_running_loop()
        timeout = self.timeout_s if timeout_s is None else timeout_s
        now = time.monotonic()
        job: _Job[T] = _Job(fn, loop.create_future(), loop, now, now + timeout)
        with self._cv:
            if self._closed:
                raise PoolClosed(f"model {self.name} is unloaded")
            if self.depth >= self.max_depth:
                self.stats.rejected += 1
                raise QueueFull(f"model {self.name} is busy: {self.depth} requests queued")
            self._lanes[lane].append(job)
            if self._idle:
                self._wake[self._idle.pop()].notify()
        # A timer rather than asyncio.wait_for(shield(...)): the answer then reaches the caller in one loop turn
        # instead of three, which is measurable next to a 12 ms inference.
        timer = loop.call_later(timeout, self._expire, job, lane, timeout)
        try:
            return await job.future
        finally:
            timer.cancel()

    def _expire(self, job: _Job[Any], lane: int, timeout: float) -> None:
        if job.future.done():
            return
        self.stats.timed_out += 1
        # A worker that already started it drops the result.
        job.future.set_exception(QueueTimeout(f"model {self.name} did not answer within {timeout:g} s"))
        # Free its queue slot now rather than when a (possibly hung) worker gets to it.
        with self._cv, contextlib.suppress(ValueError):
            self._lanes[lane].remove(job)

    # ---- worker side -----------------------------------------------------------------------------------------

    def _next_job(self) -> _Job[Any] | None:
        requests, cameras = self._lanes
        if cameras and (not requests or self._streak >= _CAMERA_SHARE):
            self._streak = 0
            return cameras.popleft()
        if requests:
            self._streak += 1
            return requests.popleft()
        return None

    def _work(self, index: int, session: Session) -> None:
        while True:
            with self._cv:
                job = self._next_job()
                while job is None and not self._closed:
                    # A timed-out wait keeps its place on the stack, so the heartbeat does not reorder workers.
                    if index not in self._idle:
                        self._idle.append(index)
                    self._wake[index].wait(timeout=1.0)
                    job = self._next_job()
                    if self._on_job_done is not None and job is None:
                        # Idle heartbeat: an idle pool is a healthy pool.
                        self._on_job_done()
                if index in self._idle:
                    self._idle.remove(index)
                if job is None:
                    return
            if job.future.done():  # timed out or its request went away while it waited
                continue
            if time.monotonic() > job.deadline:
                self.stats.timed_out += 1
                job.loop.call_soon_threadsafe(_set_exception, job.future, QueueTimeout("waited too long"))
                continue
            with self._cv:
                # Alone: nothing waits behind it and nothing else runs, so all cores are free for this one job.
                alone = self.lone is not None and self._running == 0 and not self.depth
                self._running += 1
            self.busy_since[index] = start = time.monotonic()
            deliver: Callable[[asyncio.Future[Any], Any], None]
            try:
                outcome: Any = job.fn(self.lone if alone else session)
                deliver = _set_result
                self.stats.processed += 1
                if alone:
                    self.stats.lone += 1
            except Exception as exc:  # delivered to the awaiting request, never kills the worker
                outcome, deliver = exc, _set_exception
                self.stats.failed += 1
            elapsed = (time.monotonic() - start) * 1000
            self.stats.busy_ms_total += elapsed
            self.stats.recent_ms.append(elapsed)
            self.busy_since[index] = None
            if self._on_job_done is not None:
                self._on_job_done()
            with self._cv:
                self._running -= 1
                # Back on top of the idle stack before the caller hears the answer: its next request (often
                # sent at once) then comes to this warm worker, not to one that has been idle longer.
                if index not in self._idle:
                    self._idle.append(index)
                # Last before this thread waits again: the event loop that wakes for the answer needs the GIL.
                job.loop.call_soon_threadsafe(deliver, job.future, outcome)

    def stuck_for(self) -> float:
        """Seconds the longest-running current job has been running (0 when all workers are idle)."""
        now = time.monotonic()
        return max((now - t for t in self.busy_since if t is not None), default=0.0)

    def close(self, wait: float = 5.0) -> None:
        with self._cv:
            self._closed = True
            pending = [*self._lanes[0], *self._lanes[1]]
            self._lanes[0].clear()
            self._lanes[1].clear()
            for wake in self._wake:
                wake.notify_all()
        for job in pending:
            job.loop.call_soon_threadsafe(_set_exception, job.future, PoolClosed(f"model {self.name} unloaded"))
        deadline = time.monotonic() + wait
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for s in [*self.sessions, *([self.lone] if self.lone is not None else [])]:
            try:
                s.close()
            except Exception:  # closing is best effort; a vendor runtime may already be gone
                log.debug("closing a session of %s failed", self.name, exc_info=True)

    def snapshot(self) -> dict[str, Any]:
        return {
            "workers": len(self.sessions),
            "queueDepth": self.depth,
            "maxQueueDepth": self.max_depth,
            "processed": self.stats.processed,
            "processedAlone": self.stats.lone,
            "failed": self.stats.failed,
            "rejected": self.stats.rejected,
            "timedOut": self.stats.timed_out,
            "averageProcessMs": round(self.stats.average_ms(), 2),
        }


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
