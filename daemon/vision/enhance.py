"""Image enhancement: super-resolution (ESPCN x2 through OpenCV's dnn_superres) and cartoonisation (white-box GAN).

Both are Sessions, one per worker thread: super-resolution through the `opencv-superres` runtime
(accelerators/cpu_opencv.py; algorithm and scale come from the file name), the cartoon GAN a TFLite model.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from ...accelerators.base import Session
from ..registry import LoadedTask, ModelRegistry, ModelUnavailable
from .image import ImageError, decode_image
from .preprocess import Preprocessor
from .segment import ImageOutput

SUPERRES_TASK = "superresolution"
SUPERRES_MODEL = "espcn_x2"
# ESPCN costs ~1 s per input megapixel on two ARM-class cores and the answer is a PNG of 4x the pixels: a 1280×720
# frame is about the most that comes back within the queue timeout.
SUPERRES_MAX_PIXELS = 1_000_000

CARTOON_TASK = "cartoon"
# The `model` form field: our names, the manifest ids, and CodeProject.AI's default name for its default model.
CARTOON_MODELS = {
    "whitebox": "cartoon_gan",
    "whitebox_int8": "cartoon_gan_int8",
    "cartoon_gan": "cartoon_gan",
    "cartoon_gan_int8": "cartoon_gan_int8",
}
DEFAULT_CARTOON_MODEL = "whitebox"
# The GAN's activations take ~400 MB at 512×512: give them back when nobody has cartoonised for a while.
CARTOON_IDLE_S = 120.0
SUPERRES_IDLE_S = 300.0
JPEG_QUALITY = 90


class SuperResTask:
    def __init__(self, loaded: LoadedTask, max_pixels: int, scale: int) -> None:
        self.loaded = loaded
        self.max_pixels = max_pixels
        self.scale = scale

    def _run(self, session: Session, image: bytes | np.ndarray) -> ImageOutput:
        t0 = time.perf_counter()
        bgr = decode_image(image, self.max_pixels) if isinstance(image, bytes) else image
        h, w = bgr.shape[:2]
        if w * h > SUPERRES_MAX_PIXELS:
            raise ImageError(f"the image is {w}×{h}; super-resolution takes at most"
                             f" {SUPERRES_MAX_PIXELS / 1e6:.1f} megapixels")
        t1 = time.perf_counter()
        out = upscale_tiled(session, bgr, self.scale)
        t2 = time.perf_counter()
        self.loaded.record((t2 - t1) * 1000)
        ok, png = cv2.imencode(".png", out)
        if not ok:
            raise ValueError("PNG encoding failed")
        return ImageOutput(png.tobytes(), "image/png", out.shape[1], out.shape[0], (t2 - t1) * 1000,
                           (time.perf_counter() - t0) * 1000)

    async def upscale(self, image: bytes | np.ndarray) -> ImageOutput:
        return await self.loaded.run(lambda w: self._run(w, image))


# ESPCN's three convolutions see 4 pixels around each one, so tiles overlapping by SUPERRES_MARGIN give the
# whole-image result (to within 1 of 255, rounding), while OpenCV's working memory (64 float channels per input
# pixel, kept for the next call) stays that of one tile: ~45 MiB instead of ~450 MiB for a 1 MP input.
SUPERRES_TILE = 256
SUPERRES_MARGIN = 8


def _windows(length: int, size: int, step: int, margin: int) -> list[tuple[int, int, int, int]]:
    """(start, end, valid from, valid to) of windows of one size covering 0..length; each window's valid part
    leaves out `margin` pixels on every side that is not the image's own edge."""
    if length <= size:
        return [(0, length, 0, length)]
    starts = list(range(0, length - size + 1, step))
    if starts[-1] + size < length:
        starts.append(length - size)
    return [(a, a + size, a if a == 0 else a + margin, a + size if a + size == length else a + size - margin)
            for a in starts]


def upscale_tiled(session: Session, bgr: np.ndarray, scale: int, tile: int = SUPERRES_TILE,
                  margin: int = SUPERRES_MARGIN) -> np.ndarray:
    """Super-resolution tile by tile. Every tile has the same shape, so OpenCV keeps one set of buffers instead of
    reallocating them for odd-sized edge tiles (the memory budget measures that set when the model loads)."""
    h, w = bgr.shape[:2]
    size = tile + 2 * margin
    if h <= size and w <= size:
        return session.run([bgr])[0]
    out = np.empty((h * scale, w * scale, 3), np.uint8)
    for y0, y1, vy0, vy1 in _windows(h, size, tile, margin):
        for x0, x1, vx0, vx1 in _windows(w, size, tile, margin):
            part = session.run([np.ascontiguousarray(bgr[y0:y1, x0:x1])])[0]
            out[vy0 * scale:vy1 * scale, vx0 * scale:vx1 * scale] = \
                part[(vy0 - y0) * scale:(vy1 - y0) * scale, (vx0 - x0) * scale:(vx1 - x0) * scale]
    return out


def _build_superres(registry: ModelRegistry, max_pixels: int) -> LoadedTask:
    scales: list[int] = []

    def warm(session: Session) -> None:
        # The first run also says the model's scale (ESPCN_x2 doubles a 16 px square to 32 px). A second at the
        # tile size sets up the working memory every request uses, so the memory budget measures it at load.
        scales.append(session.run([np.zeros((16, 16, 3), np.uint8)])[0].shape[0] // 16)
        side = SUPERRES_TILE + 2 * SUPERRES_MARGIN
        session.run([np.zeros((side, side, 3), np.uint8)])

    opened = registry.open_sessions(SUPERRES_MODEL, registry.task_workers(), warm)
    loaded = LoadedTask(SUPERRES_TASK, registry.task_pool(SUPERRES_TASK, list(opened.sessions)), opened.kind,
                        [opened.path.name], opened.fallback_reasons)
    loaded.engine = SuperResTask(loaded, max_pixels, scales[-1])
    return loaded


async def get_superres_task(registry: ModelRegistry, max_pixels: int) -> SuperResTask:
    loaded = await registry.get_task(SUPERRES_TASK, lambda: _build_superres(registry, max_pixels),
                                     {SUPERRES_MODEL: registry.task_workers()})
    registry.release_when_idle(SUPERRES_TASK, SUPERRES_IDLE_S)
    task: SuperResTask = loaded.engine
    return task


class CartoonTask:
    def __init__(self, loaded: LoadedTask, pre: Preprocessor, max_pixels: int) -> None:
        self.loaded = loaded
        self.pre = pre
        self.max_pixels = max_pixels

    def _run(self, session: Session, image: bytes | np.ndarray) -> ImageOutput:
        t0 = time.perf_counter()
        bgr = decode_image(image, self.max_pixels) if isinstance(image, bytes) else image
        tensor, _ = self.pre(bgr)
        t1 = time.perf_counter()
        out = session.run([tensor])[0][0]
        t2 = time.perf_counter()
        self.loaded.record((t2 - t1) * 1000)
        rgb = np.clip((out.astype(np.float32) + 1.0) * 127.5, 0, 255).astype(np.uint8)
        h, w = bgr.shape[:2]
        # The GAN works on a fixed square; the answer has the photo's own size and aspect again.
        result = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (w, h), interpolation=cv2.INTER_CUBIC)
        ok, jpeg = cv2.imencode(".jpg", result, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return ImageOutput(jpeg.tobytes(), "image/jpeg", w, h, (t2 - t1) * 1000, (time.perf_counter() - t0) * 1000)

    async def cartoonise(self, image: bytes | np.ndarray) -> ImageOutput:
        return await self.loaded.run(lambda s: self._run(s, image))


def cartoon_model_id(name: str | None) -> str:
    """Manifest id for the `model` form field; KeyError lists nothing, the caller words the error."""
    return CARTOON_MODELS[(name or DEFAULT_CARTOON_MODEL).strip().lower()]


def _build_cartoon(registry: ModelRegistry, model_id: str, max_pixels: int) -> LoadedTask:
    entry = registry.manifest.models[model_id]
    if entry.input is None:
        raise ModelUnavailable(f"model {model_id} has no input spec in the manifest")
    spec = entry.input
    # The GAN is heavy (~0.5 s); one worker leaves the other core to the routes that answer in milliseconds.
    # Low-memory mode: XNNPACK rebuilds its per-layer pointer tables on each run, 392 -> 151 MiB for ~25 % more
    # time, so that the GAN fits beside the detector on a 1 GB board (accelerators/cpu_tflite.py).
    opened = registry.open_sessions(model_id, 1, extra={"low_memory": "1"})
    key = f"{CARTOON_TASK}:{model_id}"
    loaded = LoadedTask(key, registry.task_pool(key, list(opened.sessions)), opened.kind, [opened.path.name],
                        opened.fallback_reasons)
    loaded.engine = CartoonTask(loaded, Preprocessor(spec, opened.sessions[0].inputs[0]), max_pixels)
    return loaded


async def get_cartoon_task(registry: ModelRegistry, model_id: str, max_pixels: int) -> CartoonTask:
    key = f"{CARTOON_TASK}:{model_id}"
    loaded = await registry.get_task(key, lambda: _build_cartoon(registry, model_id, max_pixels), {model_id: 1})
    registry.release_when_idle(key, CARTOON_IDLE_S)
    task: CartoonTask = loaded.engine
    return task
