"""Resize / letterbox and tensor conversion driven by a model's InputSpec and the session's input tensor."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...accelerators.base import TensorSpec
from ..manifest import InputSpec


@dataclass(frozen=True, slots=True)
class Transform:
    """Maps model-input pixels back to original-image pixels: x_orig = (x_in - pad_x) / scale_x."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    width: int  # original image size
    height: int

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """boxes [N,4] x1,y1,x2,y2 in model-input pixels -> original pixels (float) inside 0..width-1, 0..height-1."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, [0, 2]] = (boxes[:, [0, 2]] - self.pad_x) / self.scale_x
        out[:, [1, 3]] = (boxes[:, [1, 3]] - self.pad_y) / self.scale_y
        # Fancy indexing copies, so the clipped columns are assigned back (np.clip(out=...) would clip a copy).
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, self.width - 1)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, self.height - 1)
        return out


class Preprocessor:
    """Built once per (model, session): the lookup table and shapes are precomputed, not redone per image."""

    def __init__(self, spec: InputSpec, tensor: TensorSpec) -> None:
        self.spec = spec
        self.width, self.height = spec.size
        self.dtype = tensor.dtype
        # Pixel value (0..255) -> model value, as a 256-entry table: one np.take instead of float math per pixel.
        values = np.arange(256, dtype=np.float32)
        if spec.normalize == "unit":
            values = values / 255.0
        elif spec.normalize == "signed":
            values = values / 127.5 - 1.0
        if np.issubdtype(self.dtype, np.integer) and tensor.quant and spec.normalize != "raw":
            scale, zero = tensor.quant
            info = np.iinfo(self.dtype)
            values = np.clip(np.round(values / scale + zero), info.min, info.max)
        self._lut: np.ndarray | None = None
        # A uint8 input without quantisation takes pixels as they are: the device normalises them itself (a Hailo
        # .hef or an NPU build with mean/std inside), whatever the model's float variants expect.
        pixels = self.dtype == np.uint8 and (spec.normalize == "raw" or tensor.quant is None)
        if not pixels:
            self._lut = values.astype(self.dtype)

    def __call__(self, bgr: np.ndarray) -> tuple[np.ndarray, Transform]:
        h0, w0 = bgr.shape[:2]
        spec = self.spec
        if spec.resize == "stretch":
            img = cv2.resize(bgr, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
            transform = Transform(self.width / w0, self.height / h0, 0.0, 0.0, w0, h0)
        else:
            r = min(self.width / w0, self.height / h0)
            nw, nh = max(1, round(w0 * r)), max(1, round(h0 * r))
            resized = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
            img = np.full((self.height, self.width, 3), spec.pad, dtype=np.uint8)
            if spec.align == "center":
                px, py = (self.width - nw) // 2, (self.height - nh) // 2
            else:
                px, py = 0, 0
            img[py : py + nh, px : px + nw] = resized
            transform = Transform(nw / w0, nh / h0, float(px), float(py), w0, h0)
        if spec.color == "RGB":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        tensor = img if self._lut is None else np.take(self._lut, img)
        if spec.layout == "NCHW":
            tensor = tensor.transpose(2, 0, 1)
        return np.ascontiguousarray(tensor[None]), transform
