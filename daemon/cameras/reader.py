"""One reader thread per camera keeping only the newest frame, with a watchdog and exponential-backoff reopen.

OpenCV's FFmpeg backend ignores CAP_PROP_BUFFERSIZE, so a consumer slower than the stream would read ever older
frames; reading continuously on a thread and keeping only the last frame makes every consumer see "now".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import CameraConfig
from .sources import Source, make_source, redact

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    image: np.ndarray  # BGR; never written to after capture, so it can be shared without copying
    seq: int
    time: float  # wall clock at capture (event payloads)
    mono: float  # monotonic at capture (ages, rates)
    hires: np.ndarray | None = None


class FrameReader:
    def __init__(self, cfg: CameraConfig, source_factory: Callable[[CameraConfig], Source] = make_source) -> None:
        self.cfg = cfg
        self._factory = source_factory
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._frame: Frame | None = None
        self._seq = 0
        # A stalled thread cannot be interrupted inside a blocking read; the watchdog starts a new generation
        # and the old thread exits (closing its stream) as soon as its read returns.
        self._gen = 0
        self._thread: threading.Thread | None = None
        self.online = False
        self.last_error: str | None = None
        self.reconnects = 0
        self._fps = 0.0
        self._fps_count = 0
        self._fps_t0 = time.monotonic()
        self._online_since: float | None = None
        self._listeners: list[Callable[[bool], None]] = []
        # Called on the reader thread after each stored frame; must be cheap and never block.
        self.on_frame: Callable[[], None] | None = None

    # -- life cycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._spawn()

    def _spawn(self) -> None:
        with self._lock:
            self._gen += 1
            gen = self._gen
        self._thread = threading.Thread(
            target=self._run, args=(gen,), name=f"camera-{self.cfg.name}-{gen}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._set_online(False, self.last_error)

    def add_listener(self, fn: Callable[[bool], None]) -> None:
        """fn(online) is called on every online/offline change (from a reader thread)."""
        self._listeners.append(fn)

    # -- consumer side ------------------------------------------------------------------------------------------

    def latest(self) -> Frame | None:
        return self._frame

    def check_watchdog(self, now: float | None = None) -> bool:
        """Restart a stream that delivers no frames; returns True when it did. Call it periodically."""
        now = time.monotonic() if now is None else now
        frame = self._frame
        if not self.online or self._stop.is_set():
            return False
        last = frame.mono if frame is not None else (self._online_since or now)
        if now - last <= self.cfg.watchdog_s:
            return False
        self._set_online(False, f"stalled: no frame for {now - last:.0f} s")
        log.warning("camera %s stalled, reopening", self.cfg.name)
        self.reconnects += 1
        self._spawn()
        return True

    @property
    def fps(self) -> float:
        frame = self._frame
        if frame is None or time.monotonic() - frame.mono > 2.0:
            return 0.0
        return self._fps

    def status(self) -> dict[str, Any]:
        frame = self._frame
        return {
            "online": self.online,
            "fps": round(self.fps, 1),
            "width": int(frame.image.shape[1]) if frame is not None else None,
            "height": int(frame.image.shape[0]) if frame is not None else None,
            "last_frame_age_s": round(time.monotonic() - frame.mono, 2) if frame is not None else None,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "source": redact(self.cfg.url),
        }

    # -- reader thread ------------------------------------------------------------------------------------------

    def _current(self, gen: int) -> bool:
        return not self._stop.is_set() and gen == self._gen

    def _set_online(self, online: bool, error: str | None = None) -> None:
        if error is not None:
            self.last_error = error
        if online == self.online:
            return
        self.online = online
        self._online_since = time.monotonic() if online else None
        for fn in list(self._listeners):
            try:
                fn(online)
            except Exception:
                log.exception("camera %s: state listener failed", self.cfg.name)

    def _run(self, gen: int) -> None:
        cfg = self.cfg
        delay = cfg.backoff_min_s
        while self._current(gen):
            source = self._factory(cfg)
            try:
                source.open()
            except Exception as exc:
                if self._current(gen):
                    self._set_online(False, f"open failed: {exc}")
                    log.warning("camera %s: %s; retrying in %.0f s", cfg.name, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, cfg.backoff_max_s)
                continue
            error = "stream ended"
            try:
                while self._current(gen):
                    captured = source.read()
                    if captured is None:
                        error = "stream ended or read failed"
                        break
                    if not self._current(gen):
                        break
                    self._store(captured.image, captured.hires)
                    if not self.online:
                        delay = cfg.backoff_min_s
                        log.info("camera %s online (%s)", cfg.name, redact(cfg.url))
                        self._set_online(True)
            except Exception as exc:
                error = f"read failed: {exc}"
            finally:
                try:
                    source.close()
                except Exception:
                    log.debug("camera %s: close failed", cfg.name, exc_info=True)
            if not self._current(gen):
                break
            self._set_online(False, error)
            self.reconnects += 1
            log.warning("camera %s offline (%s); reopening in %.0f s", cfg.name, error, delay)
            self._stop.wait(delay)
            delay = min(delay * 2, cfg.backoff_max_s)

    def _store(self, image: np.ndarray, hires: np.ndarray | None) -> None:
        now = time.monotonic()
        self._seq += 1
        # A single reference assignment: readers see either the old or the new frame, never a torn one.
        self._frame = Frame(image, self._seq, time.time(), now, hires)
        if self.on_frame is not None:
            self.on_frame()
        self._fps_count += 1
        elapsed = now - self._fps_t0
        if elapsed >= 1.0:
            self._fps = self._fps_count / elapsed
            self._fps_count = 0
            self._fps_t0 = now
