"""An HTTP MJPEG camera (multipart/x-mixed-replace, like most cheap IP cameras' /stream.mjpg) for tests."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BOUNDARY = "perchframe"


class MjpegServer:
    """Serves the numbered JPEGs of a clip folder in a loop at `fps` on http://127.0.0.1:PORT/stream.mjpg."""

    def __init__(self, frames_dir: Path, fps: int = 15, port: int = 0) -> None:
        self.frames = [p.read_bytes() for p in sorted(frames_dir.glob("f*.jpg"))]
        self.fps = fps
        self._stop = threading.Event()
        # While set, connections stay open but no frames are sent: a hung camera.
        self.paused = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                if self.path != "/stream.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                period = 1.0 / server.fps
                start = time.monotonic()
                i = 0
                try:
                    while not server._stop.is_set():
                        if server.paused.is_set():
                            server._stop.wait(0.05)
                            continue
                        frame = server.frames[i % len(server.frames)]
                        self.wfile.write(
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(frame)}\r\n\r\n".encode()
                        )
                        self.wfile.write(frame + b"\r\n")
                        i += 1
                        # Pace against the start time so the stream keeps its rate even when a write is slow.
                        delay = start + i * period - time.monotonic()
                        if delay > 0:
                            server._stop.wait(delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="mjpeg-server", daemon=True)

    def show(self, frames_dir: Path) -> None:
        """Switch the stream to another clip (e.g. from an empty scene to one with a person walking in)."""
        # One reference assignment: the sending threads pick the new list up at their next frame.
        self.frames = [p.read_bytes() for p in sorted(frames_dir.glob("f*.jpg"))]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> MjpegServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
