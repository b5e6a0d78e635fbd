"""Person segmentation: background removal (PNG with alpha) and the portrait filter (background blur).

MediaPipe's selfie segmentation gives a 256x256 person probability; it is resized to the photo and used as alpha.
"Alpha matting" refines that soft mask along the photo's own edges with a guided filter (hair, shoulders), which
is what matting buys at a fraction of the cost of a closed-form solver.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from ...accelerators.base import Session
from ..registry import LoadedTask, ModelRegistry, ModelUnavailable
from .image import decode_image
from .preprocess import Preprocessor

TASK = "segmentation"
MODEL = "selfie_segmentation"
MATTING_RADIUS_SHARE = 0.01  # guided-filter radius as a share of the longer side
MATTING_EPS = 1e-3
JPEG_QUALITY = 90


@dataclass(slots=True)
class ImageOutput:
    data: bytes  # encoded image
    mime: str
    width: int
    height: int
    inference_ms: float
    process_ms: float


class SegmentTask:
    def __init__(self, loaded: LoadedTask, pre: Preprocessor, max_pixels: int) -> None:
        self.loaded = loaded
        self.pre = pre
        self.max_pixels = max_pixels

    def person_mask(self, session: Session, bgr: np.ndarray) -> tuple[np.ndarray, float]:
        """Person probability 0..1 at the photo's size, and the inference ms."""
        tensor, _ = self.pre(bgr)
        t0 = time.perf_counter()
        prob = session.run([tensor])[0].reshape(self.pre.height, self.pre.width).astype(np.float32)
        ms = (time.perf_counter() - t0) * 1000
        self.loaded.record(ms)
        h, w = bgr.shape[:2]
        return np.clip(cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0), ms

    def _remove(self, session: Session, image: bytes | np.ndarray, matting: bool) -> ImageOutput:
        t0 = time.perf_counter()
        bgr = decode_image(image, self.max_pixels) if isinstance(image, bytes) else image
        mask, ms = self.person_mask(session, bgr)
        if matting:
            if not hasattr(cv2, "ximgproc"):
                raise ModelUnavailable("alpha matting needs OpenCV's contrib modules (opencv-contrib-python-headless)")
            radius = max(2, round(max(bgr.shape[:2]) * MATTING_RADIUS_SHARE))
            mask = np.clip(cv2.ximgproc.guidedFilter(bgr, mask, radius, MATTING_EPS), 0.0, 1.0)
        bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
        bgra[:, :, 3] = np.round(mask * 255).astype(np.uint8)
        ok, png = cv2.imencode(".png", bgra)
        if not ok:
            raise ValueError("PNG encoding failed")
        return ImageOutput(png.tobytes(), "image/png", bgr.shape[1], bgr.shape[0], ms,
                           (time.perf_counter() - t0) * 1000)

    def _portrait(self, session: Session, image: bytes | np.ndarray, strength: float) -> ImageOutput:
        t0 = time.perf_counter()
        bgr = decode_image(image, self.max_pixels) if isinstance(image, bytes) else image
        mask, ms = self.person_mask(session, bgr)
        out = bgr
        if strength > 0:
            # Blur radius grows with the photo so that a strength looks the same at any resolution.
            sigma = max(0.5, strength * max(bgr.shape[:2]) / 60)
            blurred = cv2.GaussianBlur(bgr, (0, 0), sigma)
            alpha = mask[:, :, None]
            out = np.round(bgr * alpha + blurred * (1.0 - alpha)).astype(np.uint8)
        ok, jpeg = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return ImageOutput(jpeg.tobytes(), "image/jpeg", bgr.shape[1], bgr.shape[0], ms,
                           (time.perf_counter() - t0) * 1000)

    async def remove_background(self, image: bytes | np.ndarray, use_alphamatting: bool = False) -> ImageOutput:
        return await self.loaded.run(lambda s: self._remove(s, image, use_alphamatting))

    async def portrait(self, image: bytes | np.ndarray, strength: float) -> ImageOutput:
        return await self.loaded.run(lambda s: self._portrait(s, image, strength))


def _build(registry: ModelRegistry, max_pixels: int) -> LoadedTask:
    entry = registry.manifest.models[MODEL]
    if entry.input is None:
        raise ModelUnavailable(f"model {MODEL} has no input spec in the manifest")
    spec = entry.input

    def warm(session: Session) -> None:
        session.run([Preprocessor(spec, session.inputs[0])(np.zeros((32, 32, 3), np.uint8))[0]])

    opened = registry.open_sessions(MODEL, registry.task_workers(), warm)
    loaded = LoadedTask(TASK, registry.task_pool(TASK, list(opened.sessions)), opened.kind, [opened.path.name],
                        opened.fallback_reasons)
    loaded.engine = SegmentTask(loaded, Preprocessor(spec, opened.sessions[0].inputs[0]), max_pixels)
    return loaded


async def get_segment_task(registry: ModelRegistry, max_pixels: int) -> SegmentTask:
    loaded = await registry.get_task(TASK, lambda: _build(registry, max_pixels),
                                     {MODEL: registry.task_workers()})
    task: SegmentTask = loaded.engine
    return task
