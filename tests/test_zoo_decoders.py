"""RKNN model-zoo decoders on real tensors from the shared models and photos.

- YOLOX: yolox_nano.onnx's head output on dog_bicycle_car.jpg, split into the zoo's three per-stride tensors.
- YOLOv8: the DFL box and class tensors inside yolov8n_full_integer_quant.tflite (read with
  experimental_preserve_all_tensors), i.e. exactly what the zoo's nine-output export emits, checked against the
  same model's own decoded output.
- YOLOv5: no YOLOv5 model is available here, so its three heads are encoded from the real YOLOX detections with the
  YOLOv5 parameterisation and decoded back.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from perch.daemon.vision.decoder_table import get_decoder
from perch.daemon.vision.decoders import Candidates, decode_yolov8, decode_yolox
from perch.daemon.vision.detect import nms as detect_nms
from perch.daemon.vision.zoo_decoders import (
    YOLOV5_ANCHORS,
    decode_rknn_yolov5,
    decode_rknn_yolov8,
    decode_rknn_yolox,
)

from conftest import IMAGES, MODELS

PHOTO = IMAGES / "dog_bicycle_car.jpg"
YOLOX = MODELS / "detection" / "yolox_nano.onnx"
YOLOV8 = MODELS / "detection" / "yolov8n_full_integer_quant.tflite"
# COCO-80 names in model order: the 90-id SSD label file without its unused ("n/a") ids.
COCO80 = [
    line.strip() for line in (MODELS / "detection" / "coco_labels.txt").read_text().splitlines()
    if line.strip() and line.strip() != "n/a"
] if (MODELS / "detection" / "coco_labels.txt").is_file() else []


def need(*paths: Path) -> None:
    for p in paths:
        if not p.is_file():
            pytest.skip(f"shared file {p} missing")


def letterbox(bgr: np.ndarray, size: int, center: bool) -> np.ndarray:
    h, w = bgr.shape[:2]
    r = min(size / w, size / h)
    nw, nh = round(w * r), round(h * r)
    out = np.full((size, size, 3), 114, np.uint8)
    px, py = ((size - nw) // 2, (size - nh) // 2) if center else (0, 0)
    out[py : py + nh, px : px + nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out


def nms(c: Candidates, iou: float = 0.45) -> list[tuple[str, float, np.ndarray]]:
    """The daemon's own class-aware NMS, with the kept boxes labelled."""
    return [(COCO80[int(c.class_ids[i])], float(c.scores[i]), c.boxes[i]) for i in detect_nms(c, iou)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def assert_same_detections(got: list[tuple[str, float, np.ndarray]], ref: list[tuple[str, float, np.ndarray]],
                           min_iou: float) -> None:
    assert [g[0] for g in got] == [r[0] for r in ref]
    for (label, score, box), (_, rscore, rbox) in zip(got, ref, strict=True):
        assert iou(box, rbox) >= min_iou, (label, box, rbox)
        assert abs(score - rscore) < 0.05, (label, score, rscore)


@pytest.fixture(scope="module")
def yolox_raw() -> np.ndarray:
    """yolox_nano.onnx on the photo: [1, 3549, 85] (BGR 0-255, top-left letterbox, pad 114, 416x416)."""
    import onnxruntime as ort

    need(YOLOX, PHOTO)
    img = letterbox(cv2.imread(str(PHOTO)), 416, center=False)
    x = img.transpose(2, 0, 1)[None].astype(np.float32)
    sess = ort.InferenceSession(str(YOLOX), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def yolox_to_zoo_heads(raw: np.ndarray, size: int = 416) -> list[np.ndarray]:
    """The concatenated head split back into the zoo's per-stride [1, 85, H, W] tensors (same values)."""
    heads, start = [], 0
    for stride in (8, 16, 32):
        g = size // stride
        part = raw[0, start : start + g * g]  # row-major over (y, x), as YOLOX flattens
        heads.append(np.ascontiguousarray(part.reshape(g, g, -1).transpose(2, 0, 1)[None]))
        start += g * g
    return heads


def test_yolox_three_heads_match_the_concatenated_decoder(yolox_raw: np.ndarray) -> None:
    heads = yolox_to_zoo_heads(yolox_raw)
    assert [h.shape for h in heads] == [(1, 85, 52, 52), (1, 85, 26, 26), (1, 85, 13, 13)]
    got = nms(decode_rknn_yolox(heads[::-1], [], (416, 416), 0.3))  # head order must not matter
    ref = nms(decode_yolox([yolox_raw], [], (416, 416), 0.3))
    assert {"dog", "bicycle", "car"} <= {g[0] for g in got}
    assert_same_detections(got, ref, 0.999)
    flat = nms(decode_rknn_yolox([yolox_raw], [], (416, 416), 0.3))
    assert_same_detections(flat, ref, 0.999)
    assert decode_rknn_yolox(heads, [], (416, 416), 0.99).scores.size == 0


def test_yolov5_heads_encoded_from_real_detections(yolox_raw: np.ndarray) -> None:
    """Encode each real YOLOX detection into the YOLOv5 zoo layout at the cell and anchor YOLOv5 would use, then
    decode: boxes, classes and scores must come back."""
    # 0.5 keeps one class per object: a truck guess on the car would need the car's own cell and anchor.
    ref = nms(decode_yolox([yolox_raw], [], (416, 416), 0.5))
    assert [r[0] for r in ref] == ["dog", "bicycle", "car"]
    size = 416
    heads = [np.zeros((3, 85, size // s, size // s), np.float32) for s in (8, 16, 32)]
    for h in heads:
        h[:, 4] = 0.01  # background objectness
        h[:, 5:] = 0.02
    for label, score, (x1, y1, x2, y2) in ref:
        cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        # Pick the anchor (over all strides) whose shape fits best, as YOLOv5's assignment roughly does.
        level, a = min(((lv, ai) for lv in range(3) for ai in range(3)), key=lambda la: max(
            bw / YOLOV5_ANCHORS[la[0]][la[1]][0], YOLOV5_ANCHORS[la[0]][la[1]][0] / bw,
            bh / YOLOV5_ANCHORS[la[0]][la[1]][1], YOLOV5_ANCHORS[la[0]][la[1]][1] / bh))
        stride = (8, 16, 32)[level]
        aw, ah = YOLOV5_ANCHORS[level][a]
        gx, gy = int(cx // stride), int(cy // stride)
        t = heads[level][a, :, gy, gx]
        t[0] = (cx / stride - gx + 0.5) / 2
        t[1] = (cy / stride - gy + 0.5) / 2
        t[2] = np.sqrt(bw / aw) / 2
        t[3] = np.sqrt(bh / ah) / 2
        assert 0 <= t[0] <= 1 and 0 <= t[1] <= 1 and 0 <= t[2] <= 1 and 0 <= t[3] <= 1, "not representable"
        t[4] = 1.0
        t[5 + COCO80.index(label)] = score
    outputs = [h.reshape(1, 255, h.shape[2], h.shape[3]) for h in heads]
    got = nms(decode_rknn_yolov5(outputs, [], (size, size), 0.5))
    assert_same_detections(got, ref, 0.99)
    assert decode_rknn_yolov5(outputs, [], (size, size), 0.999).scores.size == 0


@pytest.fixture(scope="module")
def yolov8_tensors() -> tuple[list[np.ndarray], np.ndarray, object]:
    """(nine zoo-layout tensors, the model's own [1, 84, 8400] output, its spec) for the photo."""
    from ai_edge_litert.interpreter import Interpreter

    from perch.accelerators.base import TensorSpec

    need(YOLOV8, PHOTO)
    it = Interpreter(model_path=str(YOLOV8), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rgb = cv2.cvtColor(letterbox(cv2.imread(str(PHOTO)), 640, center=True), cv2.COLOR_BGR2RGB)
    scale, zero = inp["quantization"]
    it.set_tensor(inp["index"], np.clip(np.round(rgb / 255.0 / scale + zero), -128, 127).astype(np.int8)[None])
    it.invoke()
    final = it.get_tensor(out["index"])
    # The DFL box (64 ch) and class-logit (80 ch) tensors that feed the head's concat share its quantisation.
    details = it.get_tensor_details()
    concat = next(d for d in details if tuple(d["shape"]) == (1, 80, 80, 144))
    q = concat["quantization"]
    zoo: list[np.ndarray] = []
    for g in (80, 40, 20):
        pair = {}
        for d in details:
            shape = tuple(int(v) for v in d["shape"])
            if shape[:3] == (1, g, g) and shape[3] in (64, 80) and d["quantization"] == q:
                pair[shape[3]] = d
        assert set(pair) == {64, 80}, f"DFL tensors for the {g}x{g} grid not found"
        deq = [(it.get_tensor(pair[c]["index"]).astype(np.float32) - q[1]) * q[0] for c in (64, 80)]
        box = deq[0].transpose(0, 3, 1, 2)
        cls = 1 / (1 + np.exp(-deq[1].transpose(0, 3, 1, 2)))  # the zoo export applies the sigmoid in-graph
        zoo += [box, cls, np.clip(cls.sum(axis=1, keepdims=True), 0, 1)]
    spec = TensorSpec("out", tuple(final.shape), final.dtype, (float(out["quantization"][0]),
                                                               int(out["quantization"][1])))
    return zoo, final, spec


# Reading intermediate tensors is what the warning is about: intended here.
@pytest.mark.filterwarnings("ignore:.*experimental_preserve_all_tensors")
def test_yolov8_dfl_head_matches_the_models_own_decoding(yolov8_tensors: tuple[list[np.ndarray], np.ndarray,
                                                                                  object]) -> None:
    zoo, final, spec = yolov8_tensors
    assert [t.shape[1] for t in zoo] == [64, 80, 1] * 3
    ref = nms(decode_yolov8([final], [spec], (640, 640), 0.4))  # type: ignore[list-item]
    got = nms(decode_rknn_yolov8(zoo, [], (640, 640), 0.4))
    assert {"dog", "bicycle"} <= {g[0] for g in got}
    # The model's own output went through one more int8 step (≈1.8 px): allow for it.
    assert_same_detections(got, ref, 0.9)
    # Six outputs (no score-sum tensors) decode the same.
    six = [t for i, t in enumerate(zoo) if i % 3 != 2]
    assert_same_detections(nms(decode_rknn_yolov8(six, [], (640, 640), 0.4)), got, 0.999)


def test_quantised_heads_are_dequantised(yolox_raw: np.ndarray) -> None:
    """An int8 RKNN build returns quantised heads when asked for raw outputs: the spec's (scale, zero) applies."""
    from perch.accelerators.base import TensorSpec

    heads = yolox_to_zoo_heads(yolox_raw)
    scale, zero = 0.05, -10
    q = [np.clip(np.round(h / scale + zero), -128, 127).astype(np.int8) for h in heads]
    specs = [TensorSpec(f"h{i}", h.shape, np.dtype(np.int8), (scale, zero)) for i, h in enumerate(q)]
    ref = nms(decode_rknn_yolox(heads, [], (416, 416), 0.5))
    got = nms(decode_rknn_yolox(q, specs, (416, 416), 0.5))
    assert {g[0] for g in got} == {r[0] for r in ref}
    for label, _, box in ref:
        assert max(iou(box, g[2]) for g in got if g[0] == label) >= 0.9


def test_registered_for_the_manifest() -> None:
    assert get_decoder("rknn_yolov5") is decode_rknn_yolov5
    assert get_decoder("rknn_yolov8") is decode_rknn_yolov8
    assert get_decoder("rknn_yolox") is decode_rknn_yolox


def test_bad_layouts_are_named() -> None:
    with pytest.raises(ValueError, match="6 or 9"):
        decode_rknn_yolov8([np.zeros((1, 64, 4, 4), np.float32)], [], (32, 32), 0.5)
    with pytest.raises(ValueError, match="expected"):
        decode_rknn_yolox([np.zeros((85,), np.float32), np.zeros((85,), np.float32)], [], (32, 32), 0.5)
