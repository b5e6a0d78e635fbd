"""Real RKNN numerics on x86: yolox_nano.onnx converted for RK3588 by rknn-toolkit2 and run through
accelerators/rknn.py (one context per NPU core) on the toolkit's simulator, against onnxruntime on the CPU.

Needs its own venv (rknn-toolkit2 2.5.0 pins numpy<=1.26.4 and imports torch): run it with `bash .ci/rknn.sh`.
Collected by the main test run too, where it skips because rknn-toolkit2 is not installed.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rknn.api", reason="rknn-toolkit2 is not installed here; run bash .ci/rknn.sh")

import cv2
import sim_rknnlite

from perch.accelerators.base import OpenOptions, get_backend
from perch.daemon.vision.zoo_decoders import decode_rknn_yolox

SHARED = Path(os.environ.get("PERCHD_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
MODELS = Path(os.environ.get("PERCHD_MODEL_DIR", SHARED / "models"))
ONNX = MODELS / "detection" / "yolox_nano.onnx"
PHOTO = SHARED / "images" / "dog_bicycle_car.jpg"
LABELS = MODELS / "detection" / "coco_labels.txt"
SIZE = 416
MIN_CONF = 0.4


def yolox_input(path: Path) -> np.ndarray:
    """YOLOX preprocessing: BGR 0-255 float, letterbox to the top-left corner, pad 114, NCHW."""
    bgr = cv2.imread(str(path))
    h, w = bgr.shape[:2]
    r = min(SIZE / w, SIZE / h)
    nw, nh = round(w * r), round(h * r)
    canvas = np.full((SIZE, SIZE, 3), 114, np.uint8)
    canvas[:nh, :nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None].astype(np.float32))


def detections(outputs: list[np.ndarray], labels: list[str]) -> list[tuple[str, float, np.ndarray]]:
    c = decode_rknn_yolox(outputs, [], (SIZE, SIZE), MIN_CONF)
    if c.scores.size == 0:
        return []
    xywh = np.concatenate([c.boxes[:, :2], c.boxes[:, 2:] - c.boxes[:, :2]], axis=1)
    kept = np.asarray(cv2.dnn.NMSBoxesBatched(xywh.tolist(), c.scores.tolist(), c.class_ids.tolist(), 0.0, 0.45))
    kept = kept.reshape(-1)
    kept = kept[np.argsort(-c.scores[kept])]
    return [(labels[int(c.class_ids[i])], float(c.scores[i]), c.boxes[i]) for i in kept]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Any:
    for p in (ONNX, PHOTO, LABELS):
        if not p.is_file():
            pytest.skip(f"shared file {p} missing")
    out = tmp_path_factory.mktemp("rknn") / "yolox_nano_rk3588_fp16.rknn"
    toolkit = sim_rknnlite.convert(ONNX, out, "rk3588")
    yield out
    toolkit.release()


def test_rknn_backend_matches_onnxruntime_cpu(converted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg, api = sim_rknnlite.as_module()
    monkeypatch.setitem(sys.modules, "rknnlite", pkg)
    monkeypatch.setitem(sys.modules, "rknnlite.api", api)
    sim_rknnlite.SimRKNNLite.contexts.clear()
    labels = [s.strip() for s in LABELS.read_text().splitlines() if s.strip() and s.strip() != "n/a"]
    x = yolox_input(PHOTO)

    cpu = get_backend("cpu_onnx").open(ONNX, OpenOptions(threads=2))
    reference = detections(cpu.run([x]), labels)
    cpu.close()
    assert {"dog", "bicycle", "car"} <= {d[0] for d in reference}, reference

    # One RKNN session per NPU core, as the daemon opens them on an RK3588, each driven by its own thread.
    backend = get_backend("rknn")
    sessions = [backend.open(converted, OpenOptions(device=f"npu-core:{i}")) for i in range(3)]
    assert [c.core_mask for c in sim_rknnlite.SimRKNNLite.contexts] == [1, 2, 4]
    assert sessions[0].inputs[0].shape == (1, 3, SIZE, SIZE)  # read from the exported .rknn file
    assert sessions[0].outputs[0].shape == (1, 3549, 85)
    results: dict[int, list[np.ndarray]] = {}

    def work(i: int) -> None:
        results[i] = sessions[i].run([x])

    workers = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(results) == [0, 1, 2]
    assert all(c.runs == 1 for c in sim_rknnlite.SimRKNNLite.contexts)
    raw_diff = float(np.abs(results[0][0] - results[1][0]).max())
    assert raw_diff == 0.0  # same simulator, same input: every core must give the same answer

    # NHWC input is accepted too (RKNNLite's default layout) and gives the same tensor.
    nhwc = sessions[2].run([np.ascontiguousarray(x.transpose(0, 2, 3, 1))])
    assert float(np.abs(nhwc[0] - results[0][0]).max()) < 1e-3

    got = detections(results[0], labels)
    print("\nonnxruntime CPU:", [(d[0], round(d[1], 3)) for d in reference])
    print("RKNN simulator :", [(d[0], round(d[1], 3)) for d in got])
    assert sorted(d[0] for d in got) == sorted(d[0] for d in reference)
    unmatched = list(got)
    for label, _, box in reference:
        best = max((d for d in unmatched if d[0] == label), key=lambda d: iou(d[2], box))
        unmatched.remove(best)
        print(f"  {label}: IoU {iou(best[2], box):.3f}, score {best[1]:.3f}")
        assert iou(best[2], box) >= 0.8, (label, best[2], box)
    for s in sessions:
        s.close()
    assert all(c.released for c in sim_rknnlite.SimRKNNLite.contexts)
