"""Object detection task: bytes or a frame in, Detection list out. Runs entirely on a scheduler worker thread."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ...accelerators.base import Session
from ..manifest import InputSpec
from .decoder_table import get_decoder
from .decoders import Candidates
from .image import decode_image
from .preprocess import Preprocessor
from .types import Detection

NMS_IOU = 0.45


@dataclass(slots=True)
class DetectResult:
    detections: list[Detection]
    inference_ms: float  # session.run only
    process_ms: float  # decode + preprocess + run + postprocess
    width: int
    height: int


def nms(c: Candidates, iou: float) -> np.ndarray:
    """Class-aware NMS (OpenCV's batched NMS); returns kept indices sorted by score, highest first."""
    if len(c.scores) == 0:
        return np.zeros(0, np.int64)
    if c.needs_nms:
        xywh = np.concatenate([c.boxes[:, :2], c.boxes[:, 2:] - c.boxes[:, :2]], axis=1)
        kept = cv2.dnn.NMSBoxesBatched(xywh.tolist(), c.scores.tolist(), c.class_ids.tolist(), 0.0, iou)
        idx = np.asarray(kept, dtype=np.int64).reshape(-1)
    else:
        idx = np.arange(len(c.scores))
    return idx[np.argsort(-c.scores[idx], kind="stable")]


class Detector:
    """One model's pre/post-processing, bound to the tensor specs of its sessions (all workers share it)."""

    def __init__(self, input_spec: InputSpec, decoder: str, labels: Sequence[str], session: Session) -> None:
        self.input_spec = input_spec
        self.labels = list(labels)
        self.pre = Preprocessor(input_spec, session.inputs[0])
        self.decode = get_decoder(decoder)

    def label(self, class_id: int) -> str:
        if 0 <= class_id < len(self.labels):
            return self.labels[class_id]
        return str(class_id)

    def warmup_input(self) -> np.ndarray:
        return np.full((64, 64, 3), 114, np.uint8)

    def run_frame(
        self, session: Session, bgr: np.ndarray, min_confidence: float, iou: float = NMS_IOU
    ) -> DetectResult:
        t0 = time.perf_counter()
        tensor, transform = self.pre(bgr)
        t1 = time.perf_counter()
        outputs = session.run([tensor])
        t2 = time.perf_counter()
        cand = self.decode(outputs, session.outputs, self.input_spec.size, min_confidence)
        order = nms(cand, iou)
        boxes = transform.to_original(cand.boxes[order]) if order.size else cand.boxes[:0]
        dets = []
        for box, score, cid in zip(boxes, cand.scores[order], cand.class_ids[order], strict=True):
            label = self.label(int(cid))
            if label in ("n/a", "???", ""):
                continue
            x1, y1, x2, y2 = (round(float(v)) for v in box)
            if x2 <= x1 or y2 <= y1:
                continue
            dets.append(Detection(label, float(score), x1, y1, x2, y2))
        t3 = time.perf_counter()
        return DetectResult(dets, (t2 - t1) * 1000, (t3 - t0) * 1000, transform.width, transform.height)

    def run_bytes(
        self, session: Session, data: bytes, min_confidence: float, max_pixels: int, iou: float = NMS_IOU
    ) -> DetectResult:
        t0 = time.perf_counter()
        bgr = decode_image(data, max_pixels)
        result = self.run_frame(session, bgr, min_confidence, iou)
        result.process_ms = (time.perf_counter() - t0) * 1000
        return result
