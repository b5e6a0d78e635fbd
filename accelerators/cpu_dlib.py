"""CPU backend for dlib's face descriptor: the 5-point shape predictor aligns each face, then
face_recognition_model_v1 (a ResNet) turns it into a 128-d vector; distance < 0.6 is dlib's "same person".

The Session is opened with the descriptor model (`dlib_face_recognition_resnet_model_v1.dat`) as its path; the
landmark model it aligns with (`shape_predictor_5_face_landmarks.dat`) is a second file, named explicitly by
`OpenOptions.extra[LANDMARKS]` — the caller resolves and verifies it like any model file. Manifest variants pick this
backend with `runtime: dlib`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendUnavailable, InferenceError, ModelLoadError, OpenOptions, TensorSpec

# OpenOptions.extra key: path of the 5-point shape predictor .dat the descriptor model aligns faces with.
LANDMARKS = "landmarks"
DESCRIPTOR_SIZE = 128


def import_dlib() -> Any:
    """The vendor seam: tests replace this to simulate a machine without dlib."""
    try:
        import dlib
    except ImportError as exc:
        raise BackendUnavailable("dlib is not installed: pip install dlib-bin") from exc
    return dlib


class DlibSession:
    """inputs [RGB image HxWx3 uint8, boxes [N,4] int32 x1,y1,x2,y2] -> output [N,128] float32 descriptors."""

    kind = "cpu"
    device = "cpu"

    def __init__(self, dlib: Any, shape: Any, net: Any) -> None:
        self._dlib = dlib
        self._shape = shape
        self._net = net
        self.inputs = [TensorSpec("image", (-1, -1, 3), np.dtype(np.uint8)),
                       TensorSpec("boxes", (-1, 4), np.dtype(np.int32))]
        self.outputs = [TensorSpec("descriptors", (-1, DESCRIPTOR_SIZE), np.dtype(np.float32))]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._net is None:
            raise InferenceError("the dlib session is closed")
        if len(inputs) != 2:
            raise InferenceError(f"dlib takes an RGB image and boxes, got {len(inputs)} inputs")
        image, boxes = inputs
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InferenceError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
        rows = np.asarray(boxes).reshape(-1, 4).astype(np.int64).tolist()
        if not rows:
            return [np.zeros((0, DESCRIPTOR_SIZE), np.float32)]
        rgb = np.ascontiguousarray(image)
        try:
            shapes = self._dlib.full_object_detections()
            for x1, y1, x2, y2 in rows:
                shapes.append(self._shape(rgb, self._dlib.rectangle(x1, y1, x2, y2)))
            # One call for all faces: dlib batches the ResNet; the vectors equal the one-face-at-a-time ones.
            vectors = self._net.compute_face_descriptor(rgb, shapes)
        except RuntimeError as exc:
            raise InferenceError(f"dlib face descriptor failed: {exc}") from exc
        return [np.asarray([np.asarray(v) for v in vectors], np.float32).reshape(-1, DESCRIPTOR_SIZE)]

    def close(self) -> None:
        self._shape = self._net = None


class DlibBackend:
    kind = "cpu"

    def open(self, path: Path, options: OpenOptions) -> DlibSession:
        landmarks = options.extra.get(LANDMARKS)
        if not landmarks:
            raise ModelLoadError(f"{path.name} needs its 5-point landmark model: pass its path as"
                                 f" OpenOptions.extra[{LANDMARKS!r}]")
        dlib = import_dlib()
        try:
            shape = dlib.shape_predictor(str(landmarks))
        except RuntimeError as exc:
            raise ModelLoadError(f"cannot load dlib landmark model {landmarks}: {exc}") from exc
        try:
            net = dlib.face_recognition_model_v1(str(path))
        except RuntimeError as exc:
            raise ModelLoadError(f"cannot load dlib descriptor model {path}: {exc}") from exc
        return DlibSession(dlib, shape, net)
