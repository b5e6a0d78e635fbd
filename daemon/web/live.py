"""Live annotated views of the cameras: each frame is drawn and JPEG-encoded once, whoever watches it.

One producer per watched camera takes the reader's newest frame at `web.stream_fps`, draws the tracker's confirmed
objects on it and encodes it on a worker thread; viewers each hold one slot that the newest frame overwrites. So
a viewer that reads slowly skips frames instead of queueing them, and neither it nor a client that stopped reading
altogether can slow the camera's detection loop or the other viewers: the producer never waits for a viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..vision.annotate import Box, color_for, draw_boxes, encode_jpeg

log = logging.getLogger("perch.web")

Drawn = tuple[Box, str]  # box, caption


class TooManyViewers(Exception):
    pass


def render(image: np.ndarray, objects: Sequence[Drawn], quality: int) -> bytes:
    """The frame with its objects boxed and captioned, as JPEG bytes (CPU work: run it on a thread)."""
    if objects:
        boxes = [box for box, _ in objects]
        labels = [caption for _, caption in objects]
        image = draw_boxes(image, boxes, labels, [color_for(c.split(" ")[0]) for c in labels], stroke=2)
    return encode_jpeg(image, quality)


def objects_of(worker: Any) -> list[Drawn]:
    """The confirmed tracks of a camera right now (read on the event loop, where the tracker is updated)."""
    return [(t.box, f"{t.label} {t.score:.0%}") for t in worker.tracker.tracks if t.confirmed]


class Viewer:
    """One client of a stream: a single slot holding the newest frame not yet sent."""

    def __init__(self) -> None:
        self._frame: bytes | None = None
        self._ready = asyncio.Event()
        self.closed = False
        self.sent = 0
        self.skipped = 0

    def offer(self, jpeg: bytes) -> None:
        if self._frame is not None:
            self.skipped += 1  # not sent yet: the newer frame wins
        self._frame = jpeg
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self, timeout: float) -> bytes | None:
        """The newest frame, or None after `timeout` without one (or when closed)."""
        if self._frame is None and not self.closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        self._ready.clear()
        frame, self._frame = self._frame, None
        return None if self.closed else frame


class LiveView:
    """The annotated stream of one camera."""

    def __init__(self, worker: Any, fps: float, quality: int, max_viewers: int) -> None:
        self.worker = worker
        self.period = 1.0 / fps
        self.quality = quality
        self.max_viewers = max_viewers
        self.viewers: set[Viewer] = set()
        self._task: asyncio.Task[None] | None = None
        self._latest: tuple[int, bytes] | None = None  # (frame seq, JPEG) of the last encoded frame
        self._encoding: asyncio.Future[bytes] | None = None
        self.encoded = 0
        self.encode_ms = 0.0

    @property
    def name(self) -> str:
        return str(self.worker.cfg.name)

    def join(self) -> Viewer:
        if len(self.viewers) >= self.max_viewers:
            raise TooManyViewers(f"camera {self.name} already has {len(self.viewers)} live viewers, the most"
                                 " allowed (web.max_viewers_per_camera); close another view first")
        viewer = Viewer()
        self.viewers.add(viewer)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._produce(), name=f"live-{self.name}")
        return viewer

    def leave(self, viewer: Viewer) -> None:
        viewer.close()
        self.viewers.discard(viewer)

    def close(self) -> None:
        for viewer in list(self.viewers):
            self.leave(viewer)
        if self._task is not None:
            self._task.cancel()

    async def frame(self) -> bytes | None:
        """The annotated JPEG of the newest frame (None before the first frame); encoded at most once per frame."""
        frame = self.worker.reader.latest()
        if frame is None:
            return None
        if self._latest is not None and self._latest[0] == frame.seq:
            return self._latest[1]
        if self._encoding is not None and not self._encoding.done():
            # A snapshot asked while the producer encodes: share that encoding instead of starting a second one.
            return await asyncio.shield(self._encoding)
        self._encoding = asyncio.get_running_loop().create_future()
        try:
            started = time.perf_counter()
            jpeg = await asyncio.to_thread(render, frame.image, objects_of(self.worker), self.quality)
            self.encode_ms += (time.perf_counter() - started) * 1000
            self.encoded += 1
            self._latest = (frame.seq, jpeg)
            self._encoding.set_result(jpeg)
            return jpeg
        except asyncio.CancelledError:
            self._encoding.cancel()
            raise
        except Exception as exc:
            self._encoding.set_exception(exc)
            self._encoding.exception()  # retrieved: a failure nobody else waited for must not be logged twice
            raise

    async def _produce(self) -> None:
        last_seq = -1
        next_t = time.monotonic()
        while self.viewers:
            frame = self.worker.reader.latest()
            if frame is not None and frame.seq != last_seq:
                last_seq = frame.seq
                try:
                    jpeg = await self.frame()
                except (ValueError, OSError) as exc:  # a frame OpenCV cannot encode: skip it
                    log.warning("camera %s: live frame not encoded: %s", self.name, exc)
                    jpeg = None
                if jpeg is not None:
                    for viewer in list(self.viewers):
                        viewer.offer(jpeg)
            next_t = max(next_t + self.period, time.monotonic())
            await asyncio.sleep(next_t - time.monotonic())

    def status(self) -> dict[str, Any]:
        return {
            "viewers": len(self.viewers),
            "maxViewers": self.max_viewers,
            "encodedFrames": self.encoded,
            "averageEncodeMs": round(self.encode_ms / self.encoded, 2) if self.encoded else None,
        }


class LiveHub:
    """The live views of all cameras, created on first use."""

    def __init__(self, fps: float, quality: int, max_viewers: int) -> None:
        self.fps = fps
        self.quality = quality
        self.max_viewers = max_viewers
        self.views: dict[str, LiveView] = {}

    def view(self, worker: Any) -> LiveView:
        view = self.views.get(worker.cfg.name)
        if view is None or view.worker is not worker:
            view = LiveView(worker, self.fps, self.quality, self.max_viewers)
            self.views[worker.cfg.name] = view
        return view

    def close(self) -> None:
        for view in self.views.values():
            view.close()
        self.views.clear()
