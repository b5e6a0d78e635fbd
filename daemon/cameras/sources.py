"""Frame sources: OpenCV's FFmpeg backend for rtsp/http/file, V4L2 for USB, picamera2 on a Raspberry Pi.

A source opens, hands out BGR frames one `read()` at a time, and closes; reconnecting, pacing of the newest frame
and health are the reader's job (reader.py). Every call here may block, so sources only run on reader threads.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from .config import CameraConfig

# OpenCV reads FFmpeg demuxer options from this variable when a capture opens (there is no per-capture API),
# so opens that set it are serialised. TCP avoids UDP packet loss smearing frames; nobuffer/low_delay cut the
# ~2 s of stale frames FFmpeg otherwise queues.
_FFMPEG_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_ENV_LOCK = threading.Lock()
LOW_LATENCY = {
    "rtsp": "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay",
    "http": "fflags;nobuffer|flags;low_delay",
    "file": "",
}
_CREDENTIALS_RE = re.compile(r"(?<=://)[^/@\s]+@")


class SourceError(Exception):
    """The stream could not be opened or read; the message is safe to show (credentials removed)."""


def redact(url: str) -> str:
    """rtsp://user:secret@host/… -> rtsp://***@host/… for logs and status."""
    return _CREDENTIALS_RE.sub("***@", url)


def source_kind(url: str) -> str:
    low = url.lower()
    if low.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if low.startswith(("http://", "https://")):
        return "http"
    if low.startswith("file://"):
        return "file"
    if low.startswith("/dev/video"):
        return "usb"
    if low.startswith("picamera2"):
        return "picamera2"
    raise SourceError(f"unsupported source {redact(url)}")


@dataclass(slots=True)
class Captured:
    image: np.ndarray  # BGR frame for motion and detection
    hires: np.ndarray | None = None  # BGR full-size frame for snapshots when the source has a second stream


class Source(Protocol):
    def open(self) -> None: ...

    def read(self) -> Captured | None:
        """The next frame, or None when the stream ended or failed (the reader then reopens)."""
        ...

    def close(self) -> None: ...


class OpenCVSource:
    """rtsp://, http(s):// (MJPEG), file:// through FFmpeg; /dev/videoN through V4L2."""

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self.kind = source_kind(cfg.url)
        self.cap: Any = None
        # file:// plays at the file's own rate (FFmpeg would otherwise decode as fast as it can).
        self._period = 0.0
        self._next = 0.0

    def open(self) -> None:
        cfg = self.cfg
        if self.kind == "usb":
            cap = cv2.VideoCapture(cfg.url, cv2.CAP_V4L2)
            if cap.isOpened():
                # V4L2 (unlike FFmpeg) honours a one-frame buffer, so reads are always the newest frame.
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
                if cfg.width and cfg.height:
                    cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
                    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
                if cfg.fps:
                    cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        else:
            target = cfg.url[len("file://") :] if self.kind == "file" else cfg.url
            if self.kind == "file" and not os.path.exists(target):
                raise SourceError(f"no such file: {target}")
            options = cfg.ffmpeg_options if cfg.ffmpeg_options is not None else LOW_LATENCY[self.kind]
            timeout_ms = int(cfg.open_timeout_s * 1000)
            # The read timeout turns a hung server into a failed read instead of a thread stuck for ~30 s.
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
            with _ENV_LOCK:
                old = os.environ.get(_FFMPEG_ENV)
                os.environ[_FFMPEG_ENV] = options
                try:
                    cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
                finally:
                    if old is None:
                        os.environ.pop(_FFMPEG_ENV, None)
                    else:
                        os.environ[_FFMPEG_ENV] = old
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {redact(cfg.url)}")
        self.cap = cap
        if self.kind == "file":
            fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
            self._period = 1.0 / fps if 0 < fps < 240 else 1.0 / 15
            self._next = time.monotonic()

    def read(self) -> Captured | None:
        if self.cap is None:
            return None
        if self._period:
            delay = self._next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next = max(self._next + self._period, time.monotonic() - self._period)
        ok, frame = self.cap.read()
        if not ok and self.kind == "file" and self.cfg.loop:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
        if not ok or frame is None:
            return None
        return Captured(frame)

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class PiCamera2Source:
    """Raspberry Pi camera: the `lores` stream feeds motion and detection, `main` the snapshots.

    picamera2 comes from Raspberry Pi OS's apt package python3-picamera2 (it needs libcamera's Python bindings,
    which PyPI does not have), so it is imported here, on a Pi, and nowhere else.
    """

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self.cam: Any = None

    def _index(self) -> int:
        tail = self.cfg.url[len("picamera2") :].lstrip(":/")
        return int(tail) if tail.isdigit() else 0

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError("picamera2 is not installed (apt install python3-picamera2 on Raspberry Pi OS)") from exc
        cfg = self.cfg
        try:
            cam = Picamera2(self._index())
            # libcamera's "RGB888" is B,G,R in memory: OpenCV's order, no conversion needed for snapshots.
            main = {"size": (cfg.width or 1280, cfg.height or 720), "format": "RGB888"}
            lores = {"size": (cfg.lores_width, cfg.lores_height), "format": "YUV420"}
            controls = {"FrameRate": cfg.fps} if cfg.fps else {}
            cam.configure(cam.create_video_configuration(main=main, lores=lores, controls=controls))
            cam.start()
        except Exception as exc:  # libcamera raises RuntimeError/IndexError/OSError depending on what is missing
            raise SourceError(f"picamera2 {self._index()}: {exc}") from exc
        self.cam = cam

    def read(self) -> Captured | None:
        if self.cam is None:
            return None
        request = self.cam.capture_request()
        try:
            lores = request.make_array("lores")
            main = request.make_array("main")
        finally:
            request.release()
        # The lores YUV420 plane arrives as one (h*3/2, w) array.
        return Captured(cv2.cvtColor(lores, cv2.COLOR_YUV2BGR_I420), main)

    def close(self) -> None:
        if self.cam is not None:
            try:
                self.cam.stop()
                self.cam.close()
            finally:
                self.cam = None


def make_source(cfg: CameraConfig) -> Source:
    if source_kind(cfg.url) == "picamera2":
        return PiCamera2Source(cfg)
    return OpenCVSource(cfg)
