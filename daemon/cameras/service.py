"""The detection loop: newest frame -> motion gate -> capped-rate detection -> tracker -> events for the sinks.

One asyncio task per camera; the blocking parts run elsewhere (reading on the camera's reader thread, motion and
JPEG encoding via asyncio.to_thread, inference behind the `detect` callable, i.e. the shared scheduler). Each camera
has at most one detection in flight, so a busy accelerator slows cameras down instead of queueing frames.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import numpy as np

from ..vision.types import Detection
from .config import CameraConfig, CameraConfigError
from .motion import MotionGate
from .reader import Frame, FrameReader
from .recent import RecentEvents
from .snapshot import render_snapshot
from .sources import Source, make_source
from .tracker import SCORE_STEP, IouTracker, Track, iou

log = logging.getLogger(__name__)

DetectFn = Callable[[np.ndarray], Awaitable[list[Detection]]]

# A frame older than this at a detection tick is not used: the loop waits for the next one instead, so what is
# detected (and reported) is what the camera sees now, not up to one source frame interval ago.
FRESH_S = 0.02
# The longest wait for that next frame (the watchdog handles streams that stop altogether).
FRAME_WAIT_S = 0.5
# An update event needs a real change: the box moved this much (1 - IoU with the last published box).
UPDATE_MOVE = 0.4
RATE_WINDOW_S = 10.0


class EventSink(Protocol):
    """Where camera results go (the MQTT publisher; tests may add their own). Calls must not block."""

    def camera_state(self, camera: str, online: bool) -> None: ...

    def counts(self, camera: str, label: str, count: int) -> None: ...

    def snapshot(self, camera: str, label: str, jpeg: bytes) -> None: ...

    def event(self, kind: str, before: dict[str, Any], after: dict[str, Any]) -> None: ...


class _Rate:
    """Events per second over a sliding window."""

    def __init__(self) -> None:
        self._t: collections.deque[float] = collections.deque()

    def hit(self, now: float) -> None:
        self._t.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._t and now - self._t[0] > RATE_WINDOW_S:
            self._t.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        return len(self._t) / RATE_WINDOW_S


class CameraWorker:
    def __init__(
        self,
        cfg: CameraConfig,
        detect: DetectFn,
        sinks: Sequence[EventSink],
        source_factory: Callable[[CameraConfig], Source] = make_source,
        recent: RecentEvents | None = None,
    ) -> None:
        self.cfg = cfg
        # The dashboard's list of recent objects (shared by all cameras of a service).
        self.recent = recent if recent is not None else RecentEvents()
        self.detect = detect
        self.sinks = list(sinks)
        self.reader = FrameReader(cfg, source_factory)
        self.reader.on_frame = self._frame_from_thread
        self._frame_waiter: asyncio.Future[None] | None = None
        self._stopping = False
        self.gate = MotionGate(cfg.motion)
        self.tracker = IouTracker(cfg.tracker)
        self._counts: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._detections = _Rate()
        self._frames_seen = _Rate()
        self._motion_runs = _Rate()
        self.detect_ms = 0.0
        self.detect_errors = 0
        self.last_detect_error: str | None = None
        self.last_latency_ms: float | None = None

    # -- life cycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.reader.add_listener(self._state_from_thread)
        for label in self.cfg.detect.labels:
            self._set_count(label, 0)
        self._emit_state(False)
        self.reader.start()
        self._task = asyncio.create_task(self._run(), name=f"camera-{self.cfg.name}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            # Bounded: a camera task that ignored the cancellation must not hang the daemon's shutdown.
            done, _ = await asyncio.wait((self._task,), timeout=5.0)
            if not done:
                log.error("camera %s: loop did not stop within 5 s", self.cfg.name)
            self._task = None
        await asyncio.to_thread(self.reader.stop)
        self._end_all()

    # -- state changes from the reader thread -------------------------------------------------------------------

    def _state_from_thread(self, online: bool) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_state, online)

    def _frame_from_thread(self) -> None:
        # Only wakes the event loop when the camera loop is actually waiting (a few times a second).
        waiter = self._frame_waiter
        loop = self._loop
        if waiter is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, waiter)

    async def _fresh_frame(self, last_seq: int) -> Frame | None:
        frame = self.reader.latest()
        if frame is not None and frame.seq != last_seq and time.monotonic() - frame.mono <= FRESH_S:
            return frame
        assert self._loop is not None
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._frame_waiter = waiter
        try:
            # asyncio.wait, not wait_for: before Python 3.12, wait_for can swallow a cancellation that arrives
            # just as the frame does, and the camera task would then never stop.
            await asyncio.wait((waiter,), timeout=FRAME_WAIT_S)
        finally:
            self._frame_waiter = None
            waiter.cancel()
        return self.reader.latest()

    def _on_state(self, online: bool) -> None:
        self._emit_state(online)
        if not online:
            # Nothing can be seen while the stream is down: end what was in view instead of freezing the counts.
            self._end_all()
            self.gate.reset()

    def _emit_state(self, online: bool) -> None:
        for s in self.sinks:
            _safe(s.camera_state, self.cfg.name, online)

    # -- the loop -----------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        cfg = self.cfg
        interval = 1.0 / cfg.detect.fps
        last_seq = -1
        last_motion = -1e9
        last_detect = -1e9
        next_t = time.monotonic()
        while not self._stopping:
            now = time.monotonic()
            await asyncio.sleep(max(0.0, next_t - now))
            next_t = max(next_t + interval, time.monotonic())
            self.reader.check_watchdog()
            if not self.reader.online:
                continue
            frame = await self._fresh_frame(last_seq)
            if frame is None or frame.seq == last_seq or not self.reader.online:
                continue
            last_seq = frame.seq
            now = time.monotonic()
            self._frames_seen.hit(now)
            if not cfg.detect.enabled:
                continue
            if cfg.motion.enabled:
                moving = await asyncio.to_thread(self.gate.update, frame.image)
            else:
                moving = True
            if moving:
                last_motion = now
                self._motion_runs.hit(now)
            wanted = (
                moving
                or now - last_motion < cfg.motion.tail_s
                or (bool(self.tracker.tracks) and now - last_detect >= cfg.motion.refresh_s)
            )
            if not wanted:
                continue
            last_detect = now
            try:
                t0 = time.perf_counter()
                detections = await self.detect(frame.image)
                ms = (time.perf_counter() - t0) * 1000
                self.detect_ms = ms if self.detect_ms == 0 else 0.8 * self.detect_ms + 0.2 * ms
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.detect_errors += 1
                if self.last_detect_error != str(exc):
                    log.warning("camera %s: detection failed: %s", cfg.name, exc)
                self.last_detect_error = str(exc)
                continue
            self._detections.hit(time.monotonic())
            try:
                await self._process(frame, self._filter(detections, frame))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("camera %s: event processing failed", cfg.name)

    def _filter(self, detections: Sequence[Detection], frame: Frame) -> list[Detection]:
        d = self.cfg.detect
        min_area = d.min_area * frame.image.shape[0] * frame.image.shape[1]
        return [x for x in detections if x.label in d.labels and x.confidence >= d.min_score and x.area() >= min_area]

    async def _process(self, frame: Frame, detections: list[Detection]) -> None:
        cfg = self.cfg
        h, w = frame.image.shape[:2]
        result = self.tracker.update(detections, frame.time, (w, h))
        now = time.monotonic()
        for t in self.tracker.tracks:
            if t.best_now:
                t.extra["best"] = (frame, detections, t.box)
        for t in result.new:
            await self._snapshot(t, now)
            after = t.payload(cfg.name)
            self._event("new", after, after, t, now)
        for t in result.updated:
            prev = t.published or {}
            changed = t.stationary != prev.get("stationary") or t.top_score >= prev.get("top_score", 0) + SCORE_STEP
            if not t.stationary and prev.get("box"):
                changed = changed or 1 - iou(tuple(prev["box"]), t.box) >= UPDATE_MOVE
            if changed and now - t.last_event_mono >= cfg.tracker.update_interval_s:
                await self._snapshot(t, now)
                self._event("update", prev, t.payload(cfg.name), t, now)
        for t in result.ended:
            await self._snapshot(t, now, final=True)
            self._event("end", t.published or t.payload(cfg.name), t.payload(cfg.name), t, now)
        self._publish_counts()

    async def _snapshot(self, t: Track, now: float, final: bool = False) -> None:
        cfg = self.cfg.snapshot
        best = t.extra.get("best")
        if not cfg.enabled or best is None or not t.snapshot_due:
            return
        if t.has_snapshot and not final and now - t.extra.get("snap_mono", 0.0) < cfg.min_interval_s:
            return
        frame, dets, box = best
        jpeg = await asyncio.to_thread(render_snapshot, frame.image, box, t.label, t.top_score, cfg, dets, frame.hires)
        t.has_snapshot = True
        t.snapshot_score = t.top_score
        t.extra["snap_mono"] = now
        t.extra["jpeg"] = jpeg
        for s in self.sinks:
            _safe(s.snapshot, self.cfg.name, t.label, jpeg)

    def _event(self, kind: str, before: dict[str, Any], after: dict[str, Any], t: Track, now: float) -> None:
        t.published = after
        t.last_event_mono = now
        self.last_latency_ms = (time.time() - t.frame_time) * 1000
        self.recent.record(kind, after, t.extra.get("jpeg"))
        for s in self.sinks:
            _safe(s.event, kind, before, after)

    def _end_all(self) -> None:
        now = time.monotonic()
        for t in self.tracker.end_all(time.time()):
            self._event("end", t.published or t.payload(self.cfg.name), t.payload(self.cfg.name), t, now)
        self._publish_counts()

    def _publish_counts(self) -> None:
        for label, n in self.tracker.counts(self.cfg.detect.labels).items():
            if self._counts.get(label) != n:
                self._set_count(label, n)

    def _set_count(self, label: str, n: int) -> None:
        self._counts[label] = n
        for s in self.sinks:
            _safe(s.counts, self.cfg.name, label, n)

    # -- status -------------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        st = self.reader.status()
        st.update(
            {
                "status": "online" if st["online"] else "offline",
                "detect_fps": round(self._detections.rate(now), 2),
                "motion_fps": round(self._motion_runs.rate(now), 2),
                "detect_ms": round(self.detect_ms, 1),
                "detect_errors": self.detect_errors,
                "last_detect_error": self.last_detect_error,
                "objects": {label: n for label, n in self._counts.items()},
                "latency_ms": None if self.last_latency_ms is None else round(self.last_latency_ms, 1),
            }
        )
        return st


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _safe(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("camera event sink %r failed", fn)


class CameraService:
    """All cameras of the config. `status()` is cheap and safe to call from request handlers."""

    def __init__(
        self,
        cameras: Sequence[CameraConfig],
        detect: DetectFn,
        sinks: Sequence[EventSink] = (),
        errors: Sequence[CameraConfigError] = (),
        source_factory: Callable[[CameraConfig], Source] = make_source,
    ) -> None:
        self.errors = list(errors)
        self.recent = RecentEvents()
        self.workers = [CameraWorker(c, detect, sinks, source_factory, self.recent) for c in cameras if c.enabled]
        self.disabled = [c.name for c in cameras if not c.enabled]

    def worker(self, name: str) -> CameraWorker | None:
        return next((w for w in self.workers if w.cfg.name == name), None)

    async def start(self) -> None:
        for w in self.workers:
            await w.start()

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)

    def status(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {w.cfg.name: w.status() for w in self.workers}
        for name in self.disabled:
            out[name] = {"status": "disabled", "online": False}
        for e in self.errors:
            out[e.name or f"cameras[{e.index}]"] = {"status": "invalid", "online": False, "last_error": e.error}
        return out
