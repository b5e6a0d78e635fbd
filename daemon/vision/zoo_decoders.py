"""Decoders for the output layouts of Rockchip's rknn_model_zoo detection models, in numpy.

The zoo exports cut each model before its box decoding (the NPU is bad at it) and leave one tensor per head, NCHW:
- YOLOv5: three tensors [1, 3·(5+C), H, W], sigmoid applied in the graph; xy = (2p − 0.5 + grid)·stride,
  wh = (2p)²·anchor, score = obj·cls.
- YOLOv8 / YOLO11: per stride (8, 16, 32) a DFL box tensor [1, 4·16, H, W], class scores [1, C, H, W] (sigmoid
  applied) and usually a score sum [1, 1, H, W] used to skip empty cells: nine tensors, or six without the sums.
  Box = anchor centre ∓ the expectation of a 16-bin softmax per side, times the stride.
- YOLOX: three tensors [1, 5+C, H, W] with obj/cls sigmoided and raw xy/wh: xy = (p + grid)·stride,
  wh = exp(p)·stride. The single concatenated [1, N, 5+C] export is handled by decoders.decode_yolox.
Every decoder returns boxes x1,y1,x2,y2 in model-input pixels, scores and class ids; NMS and the mapping back to the
original image happen once, in detect.py. Strides come from the input size divided by each head's height.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...accelerators.base import TensorSpec
from .decoders import EMPTY, Candidates, Decoder, decode_yolox, dequantize

# YOLOv5 COCO anchors (pixels) for strides 8, 16, 32: the zoo models keep them.
YOLOV5_ANCHORS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)
DFL_BINS = 16


def _heads(outputs: Sequence[np.ndarray], specs: Sequence[TensorSpec]) -> list[np.ndarray]:
    """Dequantised float32 tensors, one per output, as [C, H, W] (batch 1)."""
    out = []
    for i, o in enumerate(outputs):
        t = dequantize(np.asarray(o), specs[i] if i < len(specs) else None)
        if t.ndim == 4:
            t = t[0]
        if t.ndim != 3:
            raise ValueError(f"zoo head {i} has shape {np.shape(o)}; expected [1, C, H, W]")
        out.append(t)
    return out


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    return gx.reshape(-1), gy.reshape(-1)


def _stride(size: tuple[int, int], h: int) -> float:
    return size[1] / h


def _pack(boxes: list[np.ndarray], scores: list[np.ndarray], ids: list[np.ndarray]) -> Candidates:
    if not boxes or sum(len(s) for s in scores) == 0:
        return EMPTY
    return Candidates(
        np.concatenate(boxes).astype(np.float32),
        np.concatenate(scores).astype(np.float32),
        np.concatenate(ids).astype(np.int64),
    )


def decode_rknn_yolov5(
    outputs: Sequence[np.ndarray], specs: Sequence[TensorSpec], size: tuple[int, int], min_conf: float,
    anchors: Sequence[Sequence[tuple[int, int]]] = YOLOV5_ANCHORS,
) -> Candidates:
    heads = sorted(_heads(outputs, specs), key=lambda t: -t.shape[1])  # stride 8 (largest grid) first
    boxes, scores, ids = [], [], []
    for head, head_anchors in zip(heads, anchors, strict=True):
        c, h, w = head.shape
        na = len(head_anchors)
        if c % na:
            raise ValueError(f"YOLOv5 head has {c} channels, not a multiple of {na} anchors")
        p = head.reshape(na, c // na, h * w)
        stride = _stride(size, h)
        gx, gy = _grid(h, w)
        for a, (aw, ah) in enumerate(head_anchors):
            obj = p[a, 4]
            keep = np.nonzero(obj >= min_conf)[0]  # score = obj·cls <= obj: a cheap first cut
            if keep.size == 0:
                continue
            cls = p[a, 5:, keep]  # [K, C]
            cid = cls.argmax(axis=1)
            score = obj[keep] * cls[np.arange(keep.size), cid]
            ok = score >= min_conf
            keep, cid, score = keep[ok], cid[ok], score[ok]
            cx = (p[a, 0, keep] * 2 - 0.5 + gx[keep]) * stride
            cy = (p[a, 1, keep] * 2 - 0.5 + gy[keep]) * stride
            bw = (p[a, 2, keep] * 2) ** 2 * aw
            bh = (p[a, 3, keep] * 2) ** 2 * ah
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1))
            scores.append(score)
            ids.append(cid)
    return _pack(boxes, scores, ids)


def _yolov8_branches(heads: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(box, cls, score_sum) per stride; the zoo emits them in that order, branch after branch."""
    per = 3 if len(heads) % 3 == 0 and all(heads[i].shape[0] == 1 for i in range(2, len(heads), 3)) else 2
    if len(heads) % per or len(heads) == 0:
        raise ValueError(f"YOLOv8 zoo head: expected 6 or 9 outputs, got {len(heads)}")
    branches = []
    for i in range(0, len(heads), per):
        box, cls = heads[i], heads[i + 1]
        if box.shape[0] % 4 or box.shape[1:] != cls.shape[1:]:
            raise ValueError(f"YOLOv8 zoo head: box {box.shape} and class {cls.shape} tensors do not pair up")
        branches.append((box, cls, heads[i + 2] if per == 3 else None))
    return branches


def _dfl(box: np.ndarray) -> np.ndarray:
    """[4·bins, K] logits -> [4, K] distances (in strides): the softmax expectation over the bins."""
    bins = box.shape[0] // 4
    x = box.reshape(4, bins, -1)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    x /= x.sum(axis=1, keepdims=True)
    return np.einsum("abk,b->ak", x, np.arange(bins, dtype=np.float32))


def decode_rknn_yolov8(
    outputs: Sequence[np.ndarray], specs: Sequence[TensorSpec], size: tuple[int, int], min_conf: float
) -> Candidates:
    boxes, scores, ids = [], [], []
    for box, cls, ssum in _yolov8_branches(_heads(outputs, specs)):
        c, h, w = cls.shape
        cls = cls.reshape(c, h * w)
        # The score sum bounds every class score from above: skip cells whose sum is already too low.
        cand = np.nonzero(ssum.reshape(-1) >= min_conf)[0] if ssum is not None else np.arange(h * w)
        if cand.size == 0:
            continue
        cid = cls[:, cand].argmax(axis=0)
        score = cls[cid, cand]
        ok = score >= min_conf
        cand, cid, score = cand[ok], cid[ok], score[ok]
        if cand.size == 0:
            continue
        dist = _dfl(box.reshape(box.shape[0], h * w)[:, cand])
        gx, gy = _grid(h, w)
        stride = _stride(size, h)
        cx, cy = gx[cand] + 0.5, gy[cand] + 0.5
        xyxy = np.stack([cx - dist[0], cy - dist[1], cx + dist[2], cy + dist[3]], axis=1) * stride
        boxes.append(xyxy)
        scores.append(score)
        ids.append(cid)
    return _pack(boxes, scores, ids)


def decode_rknn_yolox(
    outputs: Sequence[np.ndarray], specs: Sequence[TensorSpec], size: tuple[int, int], min_conf: float
) -> Candidates:
    if len(outputs) == 1 and np.ndim(outputs[0]) == 3:
        return decode_yolox(outputs, specs, size, min_conf)  # the concatenated [1, N, 5+C] export
    boxes, scores, ids = [], [], []
    for head in sorted(_heads(outputs, specs), key=lambda t: -t.shape[1]):
        c, h, w = head.shape
        p = head.reshape(c, h * w)
        obj = p[4]
        keep = np.nonzero(obj >= min_conf)[0]
        if keep.size == 0:
            continue
        cls = p[5:, keep]
        cid = cls.argmax(axis=0)
        score = obj[keep] * cls[cid, np.arange(keep.size)]
        ok = score >= min_conf
        keep, cid, score = keep[ok], cid[ok], score[ok]
        stride = _stride(size, h)
        gx, gy = _grid(h, w)
        cx = (p[0, keep] + gx[keep]) * stride
        cy = (p[1, keep] + gy[keep]) * stride
        bw = np.exp(p[2, keep]) * stride
        bh = np.exp(p[3, keep]) * stride
        boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1))
        scores.append(score)
        ids.append(cid)
    return _pack(boxes, scores, ids)


# Names for models/manifest.yaml `decoder:`; vision/decoder_table.py merges this table with the generic one.
DECODERS: dict[str, Decoder] = {
    "rknn_yolov5": decode_rknn_yolov5,
    "rknn_yolov8": decode_rknn_yolov8,
    "rknn_yolox": decode_rknn_yolox,
}
