"""Output decoders: raw model outputs -> boxes in model-input pixels, scores and class ids.

Every decoder has the signature of `Decoder`; NMS and the mapping back to original pixels happen once, in detect.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...accelerators.base import TensorSpec


@dataclass(slots=True)
class Candidates:
    boxes: np.ndarray  # [N,4] float32 x1,y1,x2,y2 in model-input pixels
    scores: np.ndarray  # [N] float32
    class_ids: np.ndarray  # [N] int
    needs_nms: bool = True


Decoder = Callable[[Sequence[np.ndarray], Sequence[TensorSpec], tuple[int, int], float], Candidates]

EMPTY = Candidates(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), False)


def dequantize(tensor: np.ndarray, spec: TensorSpec | None) -> np.ndarray:
    if spec is not None and spec.quant and np.issubdtype(tensor.dtype, np.integer):
        scale, zero = spec.quant
        return (tensor.astype(np.float32) - zero) * scale
    return tensor.astype(np.float32, copy=False)


def decode_ssd(
    outputs: Sequence[np.ndarray], specs: Sequence[TensorSpec], size: tuple[int, int], min_conf: float
) -> Candidates:
    """TFLite_Detection_PostProcess: boxes [1,N,4] ymin,xmin,ymax,xmax (0..1), classes [1,N], scores [1,N], count."""
    by_name = {s.name: o for s, o in zip(specs, outputs, strict=False)}
    base = next((s.name for s in specs if s.name.endswith("PostProcess")), None)
    if base is not None and f"{base}:2" in by_name:
        boxes, classes, scores, count = (by_name[base], by_name[f"{base}:1"], by_name[f"{base}:2"],
                                         by_name[f"{base}:3"])
    else:
        # TF2 exports order outputs differently: find them by shape and value range.
        boxes = next(o for o in outputs if o.ndim == 3 and o.shape[-1] == 4)
        count = next(o for o in outputs if o.size == 1)
        pair = [o for o in outputs if o.ndim == 2]
        classes, scores = (pair[0], pair[1]) if np.all(pair[1] <= 1.0) else (pair[1], pair[0])
    n = int(np.asarray(count).reshape(-1)[0])
    boxes, classes, scores = boxes[0, :n], classes[0, :n], scores[0, :n]
    keep = scores >= min_conf
    w, h = size
    b = boxes[keep].astype(np.float32)
    xyxy = np.stack([b[:, 1] * w, b[:, 0] * h, b[:, 3] * w, b[:, 2] * h], axis=1) if len(b) else EMPTY.boxes
    # The graph already ran NMS per class.
    return Candidates(xyxy, scores[keep].astype(np.float32), classes[keep].astype(np.int64), needs_nms=False)


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    half = xywh[:, 2:4] / 2
    return np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)


def decode_yolov8(
    outputs: Sequence[np.ndarray], specs: Sequence[TensorSpec], size: tuple[int, int], min_conf: float
) -> Candidates:
    """Ultralytics export head [1, 4+C, N] (or [1, N, 4+C]): xywh then class scores, no objectness."""
    raw = outputs[0][0]
    if raw.shape[0] > raw.shape[1]:
        raw = raw.T
    # Filter on the quantised class scores first: dequantising all 84×8400 values costs more than the rest.
    spec = specs[0] if specs else None
    cls_raw = raw[4:]
    best_raw = cls_raw.max(axis=0)
    if spec is not None and spec.quant and np.issubdtype(raw.dtype, np.integer):
        scale, zero = spec.quant
        threshold = np.floor(min_conf / scale + zero) if scale > 0 else -np.inf
        idx = np.nonzero(best_raw >= threshold)[0]
    else:
        idx = np.nonzero(best_raw >= min_conf)[0]
    if idx.size == 0:
        return EMPTY
    sel = dequantize(raw[:, idx], spec)
    cls = sel[4:]
    class_ids = cls.argmax(axis=0)
    scores = cls[class_ids, np.arange(idx.size)]
    keep = scores >= min_conf
    xywh = sel[:4, keep].T.copy()
    # TFLite exports give 0..1 coordinates, ONNX/RKNN exports give input pixels.
    if xywh.size and float(np.max(xywh)) <= 2.0:
        xywh[:, [0, 2]] *= size[0]
        xywh[:, [1, 3]] *= size[1]
    return Candidates(_xywh_to_xyxy(xywh).astype(np.float32), scores[keep].astype(np.float32),
                      class_ids[keep].astype(np.int64))


_GRIDS: dict[tuple[int, int, tuple[int, ...]], tuple[np.ndarray, np.ndarray]] = {}


def _yolox_grid(width: int, height: int, strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    key = (width, height, strides)
    if key not in _GRIDS:
        grids, steps = [], []
        for s in strides:
            gy, gx = np.meshgrid(np.arange(height // s), np.arange(width // s), indexing="ij")
            grids.append(np.stack([gx, gy], axis=-1).reshape(-1, 2))
            steps.append(np.full((grids[-1].shape[0], 1), s))
        _GRIDS[key] = (np.concatenate(grids).astype(np.float32), np.concatenate(steps).astype(np.float32))
    return _GRIDS[key]


def decode_yolox(
    outputs: Sequence[np.ndarray], specs: Sequence[TensorSpec], size: tuple[int, int], min_conf: float,
    strides: tuple[int, ...] = (8, 16, 32),
) -> Candidates:
    """YOLOX raw head [1, N, 5+C]: xy=(p+grid)·stride, wh=exp(p)·stride; obj and classes already sigmoided."""
    pred = dequantize(outputs[0], specs[0] if specs else None)[0]
    grid, stride = _yolox_grid(size[0], size[1], strides)
    if pred.shape[0] != grid.shape[0]:
        raise ValueError(f"YOLOX output has {pred.shape[0]} rows, expected {grid.shape[0]} for {size}")
    cls = pred[:, 5:]
    class_ids = cls.argmax(axis=1)
    scores = pred[:, 4] * cls[np.arange(len(cls)), class_ids]
    keep = np.nonzero(scores >= min_conf)[0]
    if keep.size == 0:
        return EMPTY
    xy = (pred[keep, :2] + grid[keep]) * stride[keep]
    wh = np.exp(pred[keep, 2:4]) * stride[keep]
    boxes = _xywh_to_xyxy(np.concatenate([xy, wh], axis=1))
    return Candidates(boxes.astype(np.float32), scores[keep].astype(np.float32), class_ids[keep].astype(np.int64))


# Names for models/manifest.yaml `decoder:`; vision/decoder_table.py merges these with the RKNN model-zoo layouts.
DECODERS: dict[str, Decoder] = {
    "ssd_postprocess": decode_ssd,
    "yolov8": decode_yolov8,
    "yolox": decode_yolox,
}
