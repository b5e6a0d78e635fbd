"""`perchd models pull|verify|list` against a real local HTTP server serving the shared model directory."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from perch.daemon.manifest import load_manifest
from perch.daemon.pull import pull, wanted_files

from conftest import MODELS


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Serves a copy of the detection models, with one file corrupted on purpose."""
    root = tmp_path_factory.mktemp("mirror")
    (root / "detection").mkdir()
    for name in ("ssd_mobilenet_v1_coco_quant_postprocess.tflite", "coco_labels.txt"):
        (root / "detection" / name).write_bytes((MODELS / "detection" / name).read_bytes())
    (root / "detection" / "yolox_nano.onnx").write_bytes(b"<html>not a model</html>")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def test_pull_downloads_and_verifies(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = mirror
    manifest = load_manifest()
    items = wanted_files(manifest, ["ssd_mobilenet_v1"], ["cpu"])
    assert [i.ref.file for i in items] == ["detection/coco_labels.txt",
                                           "detection/ssd_mobilenet_v1_coco_quant_postprocess.tflite"]
    out = io.StringIO()
    assert pull(manifest, tmp_path, items, url, out) == []
    assert "[" in out.getvalue() and "sha256 ok" in out.getvalue()  # progress bar, then the check
    assert (tmp_path / "detection" / "ssd_mobilenet_v1_coco_quant_postprocess.tflite").stat().st_size == 4183312
    # A second pull finds everything in place and downloads nothing.
    out = io.StringIO()
    assert pull(manifest, tmp_path, items, url, out) == []
    assert "present" in out.getvalue()


def test_pull_rejects_a_wrong_file_and_keeps_nothing(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = mirror
    manifest = load_manifest()
    errors = pull(manifest, tmp_path, wanted_files(manifest, ["yolox_nano"], ["cpu"]), url, io.StringIO())
    assert len(errors) == 1 and "sha256" in errors[0] and "e8af0749" in errors[0]
    assert not (tmp_path / "detection" / "yolox_nano.onnx").exists()
    assert not list((tmp_path / "detection").glob(".*")), "no temporary file left behind"


def test_pull_reports_unreachable_server(tmp_path: Path) -> None:
    manifest = load_manifest()
    errors = pull(manifest, tmp_path, wanted_files(manifest, ["ssd_mobilenet_v1"], ["cpu"]),
                  "http://127.0.0.1:9", io.StringIO())
    assert errors and all("cannot download" in e for e in errors)


def test_cli_pull_then_verify(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = mirror
    env = dict(os.environ, PERCHD_MODEL_DIR=str(tmp_path), PERCHD_CONFIG="", PERCHD_ACCELERATOR="cpu")
    cli = [sys.executable, "-m", "perch.daemon", "models"]
    proc = subprocess.run([*cli, "pull", "--base-url", url], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True, timeout=60)
    assert "ssd_mobilenet_v1" in proc.stdout and "present" in proc.stdout
    target = tmp_path / "detection" / "ssd_mobilenet_v1_coco_quant_postprocess.tflite"
    target.write_bytes(target.read_bytes()[:-10])
    proc = subprocess.run([*cli, "verify"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "corrupt" in proc.stderr and "e4b118e5" in proc.stderr
