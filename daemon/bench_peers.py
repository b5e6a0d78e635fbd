"""What `perchd bench` runs beside Perch: DOODS2 (when a checkout with its venv is given) and camera streams.

DOODS2 (github.com/snowzach/doods2) is started from its own checkout and venv as its README says (`python main.py
-c CONFIG api`), serving the same SSD MobileNet v1 file with a 2-interpreter TFLite pool, and sent the same photo.
Nothing of it is imported here: it is a separate process spoken to over HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import yaml

from .bench_load import Post, free_port, wait_http

DOODS_ENV = "PERCHD_BENCH_DOODS"


def find_doods(arg: str | None) -> tuple[Path, Path] | None:
    """(checkout, python) of DOODS2 from --doods or $PERCHD_BENCH_DOODS; None when neither is given."""
    given = arg or os.environ.get(DOODS_ENV)
    if not given:
        return None
    root = Path(given)
    if not (root / "main.py").is_file():
        raise SystemExit(f"--doods {root}: no DOODS2 main.py there")
    for venv in ("venv", ".venv"):
        python = root / venv / "bin" / "python"
        if python.is_file():
            return root, python
    raise SystemExit(f"--doods {root}: no venv/bin/python there (see DESIGN.md §9 for the packages it needs)")


class Doods:
    """DOODS2's REST API on a free port with one tflite detector on `model_file`."""

    def __init__(self, root: Path, python: Path, model_file: Path, labels_file: Path, threads: int = 2) -> None:
        self.port = free_port()
        self.tmp = tempfile.TemporaryDirectory(prefix="perch-bench-doods-")
        config = Path(self.tmp.name) / "config.yaml"
        config.write_text(yaml.safe_dump({
            "server": {"host": "127.0.0.1", "port": self.port, "metrics": False},
            "logger": {"level": "warning"},
            "doods": {"log": "none", "detectors": [{
                "name": "default", "type": "tflite", "modelFile": str(model_file), "labelFile": str(labels_file),
                "labelsStartFromZero": True, "numThreads": threads}]},
        }))
        self.proc = subprocess.Popen([str(python), "main.py", "-c", str(config), "api"], cwd=root,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_http(f"http://127.0.0.1:{self.port}/detectors", self.proc, timeout=180)
        except BaseException:
            self.stop()
            raise

    def post(self, data: bytes) -> Post:
        # DOODS2 answers no detections unless the request names what to detect.
        body = json.dumps({"detector_name": "default", "data": base64.b64encode(data).decode(),
                           "detect": {"*": 40}}).encode()
        return Post.build(self.port, "/detect", "application/json", body, b'"detections"')

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.tmp.cleanup()


def camera_config(photo: bytes, cameras: int, fps: float, folder: Path) -> Path:
    """A daemon config with `cameras` file:// cameras playing a clip that pans across `photo`, the motion gate off:
    each camera then asks for exactly `fps` detections a second, whatever the scene does."""
    frame = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    frame = cv2.resize(frame, (800, 600))
    clip = folder / "pan.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 15, (640, 480))
    try:
        for i in range(60):
            x = 160 - abs(160 - (i * 16) % 320)  # back and forth at a constant speed
            writer.write(np.ascontiguousarray(frame[60:540, x:x + 640]))
    finally:
        writer.release()
    config = folder / "cameras.yaml"
    config.write_text(yaml.safe_dump({"cameras": [
        {"name": f"bench{i}", "url": f"file://{clip}", "motion": {"enabled": False},
         "detect": {"fps": fps, "labels": ["person", "dog", "car"]}}
        for i in range(cameras)]}))
    return config
