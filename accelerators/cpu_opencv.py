"""CPU backends for models that only OpenCV's own runtimes can run: the YuNet face detector (`cv2.FaceDetectorYN`,
whose anchors, decoding and NMS live in OpenCV rather than in the .onnx) and the dnn_superres networks
(ESPCN/FSRCNN/LapSRN/EDSR `.pb`, TensorFlow graphs that onnxruntime and TFLite cannot load).

Manifest variants pick them with `runtime: opencv-yunet` / `runtime: opencv-superres`. `OpenOptions.threads` is not
applied: OpenCV's thread count is process-wide (cv2.setNumThreads) and would change every other OpenCV call too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import BackendUnavailable, InferenceError, ModelLoadError, OpenOptions, TensorSpec

OPENCV_FIX = "pip install 'opencv-contrib-python-headless<5'"

# YuNet defaults: OpenCV Zoo uses score 0.9; 0.6 finds the small and turned faces of the shared photos. Override with
# OpenOptions.extra {"score_threshold", "nms_threshold", "top_k"}; the score can also change per run (second input).
YUNET_SCORE = 0.6
YUNET_NMS = 0.3
YUNET_TOP_K = 5000
# One row per face: x, y, w, h, five landmarks (x, y) — right eye, left eye, nose tip, right and left mouth
# corner — and the score, in the pixels of the image that was passed in.
YUNET_ROW = 15

# dnn_superres algorithm per file-name prefix ("ESPCN_x2.pb", "FSRCNN-small_x3.pb", "LapSRN_x8.pb", "EDSR_x4.pb").
SUPERRES_ALGORITHMS = {"espcn": "espcn", "fsrcnn": "fsrcnn", "fsrcnn-small": "fsrcnn", "lapsrn": "lapsrn",
                       "edsr": "edsr"}
_SUPERRES_NAME = re.compile(r"^(espcn|fsrcnn-small|fsrcnn|lapsrn|edsr)_x(\d)$", re.IGNORECASE)

_IMAGE = TensorSpec("image", (-1, -1, 3), np.dtype(np.uint8))


def import_cv2() -> Any:
    """The vendor seam: tests replace this to simulate a missing or reduced OpenCV."""
    try:
        import cv2
    except ImportError as exc:
        raise BackendUnavailable(f"OpenCV is not installed: {OPENCV_FIX}") from exc
    return cv2


def _check_image(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InferenceError(f"expected an HxWx3 uint8 BGR image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


class YuNetSession:
    """cv2.FaceDetectorYN: inputs [BGR image HxWx3 uint8 (any size), optional float32 score threshold (scalar)],
    output [N, 15] float32 rows sorted as OpenCV returns them."""

    kind = "cpu"
    device = "cpu"

    def __init__(self, detector: Any, error: type[Exception], score: float) -> None:
        self._detector = detector
        self._error = error
        self._size = (0, 0)
        self._score = score
        self._default_score = score
        self.inputs = [_IMAGE, TensorSpec("score_threshold", (), np.dtype(np.float32))]
        self.outputs = [TensorSpec("faces", (-1, YUNET_ROW), np.dtype(np.float32))]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._detector is None:
            raise InferenceError("the YuNet session is closed")
        if not 1 <= len(inputs) <= 2:
            raise InferenceError(f"YuNet takes an image and an optional score threshold, got {len(inputs)} inputs")
        image = _check_image(inputs[0])
        score = float(np.asarray(inputs[1]).reshape(-1)[0]) if len(inputs) == 2 else self._default_score
        try:
            # The detector is built for one input size; it only needs telling when the size changes.
            size = (image.shape[1], image.shape[0])
            if size != self._size:
                self._detector.setInputSize(size)
                self._size = size
            if score != self._score:
                self._detector.setScoreThreshold(score)
                self._score = score
            _, rows = self._detector.detect(image)
        except self._error as exc:
            raise InferenceError(f"YuNet detection failed: {exc}") from exc
        if rows is None:
            return [np.zeros((0, YUNET_ROW), np.float32)]
        return [np.asarray(rows, np.float32).reshape(-1, YUNET_ROW)]

    def close(self) -> None:
        self._detector = None


class YuNetBackend:
    kind = "cpu"

    def open(self, path: Path, options: OpenOptions) -> YuNetSession:
        cv2 = import_cv2()
        if not hasattr(cv2, "FaceDetectorYN"):
            raise BackendUnavailable(f"OpenCV {cv2.__version__} has no FaceDetectorYN (4.5.4 or newer has it):"
                                     f" {OPENCV_FIX}")
        try:
            score = float(options.extra.get("score_threshold", YUNET_SCORE))
            nms = float(options.extra.get("nms_threshold", YUNET_NMS))
            top_k = int(options.extra.get("top_k", YUNET_TOP_K))
        except ValueError as exc:
            raise ModelLoadError(f"bad YuNet option in OpenOptions.extra: {exc}") from exc
        try:
            detector = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score, nms, top_k)
        except cv2.error as exc:
            raise ModelLoadError(f"cannot load YuNet model {path}: {exc}") from exc
        return YuNetSession(detector, cv2.error, score)


def superres_model(path: Path) -> tuple[str, int]:
    """(dnn_superres algorithm, scale) from a file name like ESPCN_x2.pb; ModelLoadError for any other name."""
    match = _SUPERRES_NAME.match(path.stem)
    if match is None:
        raise ModelLoadError(f"cannot tell the super-resolution algorithm and scale from {path.name}: name it"
                             f" <ESPCN|FSRCNN|FSRCNN-small|LapSRN|EDSR>_x<scale>.pb as OpenCV's model zoo does")
    return SUPERRES_ALGORITHMS[match.group(1).lower()], int(match.group(2))


class SuperResSession:
    """cv2.dnn_superres.DnnSuperResImpl: input [BGR image HxWx3 uint8] -> output [H*scale x W*scale x 3 uint8]."""

    kind = "cpu"
    device = "cpu"

    def __init__(self, impl: Any, error: type[Exception], algorithm: str, scale: int) -> None:
        self._impl = impl
        self._error = error
        self.algorithm = algorithm
        self.scale = scale
        self.inputs = [_IMAGE]
        self.outputs = [_IMAGE]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._impl is None:
            raise InferenceError("the super-resolution session is closed")
        if len(inputs) != 1:
            raise InferenceError(f"super-resolution takes one image, got {len(inputs)} inputs")
        image = _check_image(inputs[0])
        try:
            return [self._impl.upsample(image)]
        except self._error as exc:
            raise InferenceError(f"super-resolution failed: {exc}") from exc

    def close(self) -> None:
        self._impl = None


class SuperResBackend:
    kind = "cpu"

    def open(self, path: Path, options: OpenOptions) -> SuperResSession:
        cv2 = import_cv2()
        module = getattr(cv2, "dnn_superres", None)
        if module is None:
            # The plain opencv-python wheels lack the contrib modules; both wheels share the cv2 name.
            raise BackendUnavailable(f"OpenCV {cv2.__version__} has no dnn_superres module (a build without the"
                                     f" contrib modules): {OPENCV_FIX}")
        algorithm, scale = superres_model(path)
        try:
            impl = module.DnnSuperResImpl_create()
            impl.readModel(str(path))
            impl.setModel(algorithm, scale)
        except cv2.error as exc:
            # OpenCV 5 cannot import these TensorFlow graphs at all.
            raise ModelLoadError(f"cannot load super-resolution model {path} with OpenCV {cv2.__version__}"
                                 f" ({OPENCV_FIX}): {exc}") from exc
        return SuperResSession(impl, cv2.error, algorithm, scale)
