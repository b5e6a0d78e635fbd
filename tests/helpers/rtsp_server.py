"""A real RTSP server for tests and benchmarks, plus the clip it streams.

Two halves in one file:
- imported from the project's venv: `make_clip()` renders JPEG frames from the shared photos with OpenCV and
  `RtspServer` runs the server as a subprocess (start / kill / restart on the same port);
- run as a script with the *system* /usr/bin/python3 (PyGObject and GstRtspServer come from Debian packages
  python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,ugly}; gi is not on PyPI): serves each
  frame folder as an H.264 (or MJPEG) RTSP mount, looping forever at the given frame rate.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SYSTEM_PYTHON = "/usr/bin/python3"


def system_rtsp_available() -> str | None:
    """None when the Debian RTSP server stack is usable, else the reason (for pytest.skip)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} missing"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "import sys; sys.exit(0 if Gst.ElementFactory.find('x264enc') and Gst.ElementFactory.find('jpegdec') else 3)"
    )
    rc = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode
    return None if rc == 0 else "Debian gir1.2-gst-rtsp-server-1.0 / gstreamer1.0-plugins-{base,good,ugly} missing"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------------------------
# Clip rendering (venv side: numpy + OpenCV)


def _background(width: int, height: int) -> Any:
    import numpy as np

    # A plain, slightly textured wall: nothing a COCO detector would call an object, and stable under H.264.
    yy, xx = np.mgrid[0:height, 0:width]
    base = 90 + (40 * xx / max(width - 1, 1)) + (20 * yy / max(height - 1, 1))
    img = np.stack([base, base + 8, base + 16], axis=-1)
    return img.clip(0, 255).astype(np.uint8)


def _fit(photo: Any, width: int, height: int) -> Any:
    import cv2

    h, w = photo.shape[:2]
    scale = min(width / w, height / h)
    return cv2.resize(photo, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)


def make_clip(
    out_dir: Path,
    photo: Path,
    *,
    kind: str = "cut",
    width: int = 640,
    height: int = 480,
    fps: int = 15,
    empty_s: float = 2.0,
    object_s: float = 3.0,
    after_s: float = 3.0,
) -> Path:
    """Write a looping clip as numbered JPEGs (f00000.jpg …) and return the folder.

    kind="cut": empty scene, then the photo fills the frame for object_s, then empty again (objects appear,
    stay still, leave). kind="slide": the photo (scaled to 60 % of the frame) slides across the frame during
    object_s (a moving scene). kind="still": the photo, motionless, for the whole loop.
    """
    import cv2
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    src = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if src is None:
        raise FileNotFoundError(photo)
    bg = _background(width, height)
    full = bg.copy()
    fitted = _fit(src, width, height)
    fy, fx = (height - fitted.shape[0]) // 2, (width - fitted.shape[1]) // 2
    full[fy : fy + fitted.shape[0], fx : fx + fitted.shape[1]] = fitted
    small = _fit(src, int(width * 0.6), int(height * 0.6))

    n_empty, n_obj, n_after = (round(s * fps) for s in (empty_s, object_s, after_s))
    frames: list[np.ndarray] = []
    if kind == "still":
        frames = [full]
    elif kind == "cut":
        frames = [bg] * n_empty + [full] * n_obj + [bg] * n_after
    elif kind == "slide":
        frames = [bg] * n_empty
        sh, sw = small.shape[:2]
        y0 = (height - sh) // 2
        for i in range(n_obj):
            # From fully left of centre to fully right, staying inside the frame so boxes stay whole.
            x0 = int((width - sw) * i / max(n_obj - 1, 1))
            f = bg.copy()
            f[y0 : y0 + sh, x0 : x0 + sw] = small
            frames.append(f)
        frames += [bg] * n_after
    else:
        raise ValueError(kind)
    encoded: dict[int, bytes] = {}
    for i, f in enumerate(frames):
        key = id(f)
        if key not in encoded:
            ok, buf = cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            encoded[key] = buf.tobytes()
        (out_dir / f"f{i:05d}.jpg").write_bytes(encoded[key])
    return out_dir


# --------------------------------------------------------------------------------------------------------------
# Server process control (venv side)


class RtspServer:
    """`/usr/bin/python3 rtsp_server.py` as a subprocess serving `mounts` {path: frames_dir} on a loopback port."""

    def __init__(self, mounts: dict[str, Path], *, port: int | None = None, fps: int = 15, codec: str = "h264"):
        self.mounts = mounts
        self.port = port or free_port()
        self.fps = fps
        self.codec = codec
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}{mount}"

    def start(self, timeout: float = 15.0) -> None:
        args = [SYSTEM_PYTHON, str(Path(__file__).resolve()), "--port", str(self.port), "--fps", str(self.fps)]
        args += ["--codec", self.codec]
        for mount, folder in self.mounts.items():
            args += ["--mount", f"{mount}={folder}"]
        # The system python must not see the venv's site-packages (numpy/cv2 built for another interpreter).
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode(errors="replace")
            if line.startswith("READY"):
                return
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"RTSP server exited with {self.proc.returncode}")
        self.stop()
        raise RuntimeError("RTSP server did not become ready")

    def stop(self) -> None:
        """Kill the server outright (like a camera losing power), then reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------------------
# The server itself (system python side: PyGObject + GStreamer)


def _launch_line(folder: Path, fps: int, codec: str) -> str:
    count = len(list(folder.glob("f*.jpg")))
    if count == 0:
        raise SystemExit(f"no frames in {folder}")
    src = (
        f'( multifilesrc location="{folder}/f%05d.jpg" index=0 stop-index={count - 1} loop=true '
        f'caps="image/jpeg,framerate={fps}/1" '
    )
    if codec == "mjpeg":
        return src + "! jpegparse ! rtpjpegpay name=pay0 pt=26 )"
    # Re-encode so the stream looks like a real IP camera's: H.264, a key frame every second.
    return (
        src + "! jpegdec ! videoconvert ! video/x-raw,format=I420 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=1500 "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def _serve(argv: list[str]) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--codec", choices=["h264", "mjpeg"], default="h264")
    p.add_argument("--mount", action="append", required=True, help="/path=frames_dir")
    args = p.parse_args(argv)

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for spec in args.mount:
        path, _, folder = spec.partition("=")
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(_launch_line(Path(folder), args.fps, args.codec))
        # One pipeline for all clients: a reconnecting reader joins the running stream.
        factory.set_shared(True)
        mounts.add_factory(path, factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot bind RTSP port {args.port}")
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print("READY", flush=True)
    loop.run()


if __name__ == "__main__":
    _serve(sys.argv[1:])
