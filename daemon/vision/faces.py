"""Faces: find them (YuNet through OpenCV), describe them (dlib's 128-d ResNet descriptor), compare descriptors.

API for every dialect (CodeProject/DeepStack faces, RAYPACK celebrity and face models):

    task = await get_face_task(core.registry, core.settings.limits.max_pixels)
    result = await task.detect(image, min_confidence)          # FaceResult: faces with box, landmarks, score
    result = await task.describe(image)                        # faces with `.descriptor` (largest first)
    result = await task.recognize(image, core.store.gallery(), min_confidence)   # `.matches`
    similarity = await task.match(image1, image2)              # 0..1, same person > 0.5

`image` is the uploaded bytes or a BGR frame. All of it runs on the task's worker threads, each holding its own two
Sessions (neither runtime is thread-safe): YuNet through the `opencv-yunet` runtime and dlib's landmark + descriptor
pair through the `dlib` runtime (accelerators/cpu_opencv.py, cpu_dlib.py). The event loop only awaits.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from ...accelerators.base import Session
from ...accelerators.cpu_dlib import LANDMARKS
from ..registry import LoadedTask, ModelRegistry, ModelUnavailable
from ..store import FaceGallery
from .image import decode_image
from .types import clip_box

TASK = "faces"
DETECTOR_MODEL = "yunet_face"
LANDMARK_MODEL = "dlib_face_landmarks5"
DESCRIPTOR_MODEL = "dlib_face_resnet"

# YuNet is as accurate at 640 px as at full size on the shared photos and 5-20x faster on large images.
DETECT_MAX_SIDE = 640
# Faces to register, recognise or match are looked for at this YuNet score (OpenCV Zoo's default is 0.6).
FIND_THRESHOLD = 0.6
NMS_THRESHOLD = 0.3
# dlib's documented decision boundary: descriptor distance below 0.6 is the same person. Similarity is a logistic
# of the distance centred there, so 0.5 means "on the boundary"; the slope spreads the shared photos' same-person
# distances (<= 0.45 -> >= 0.82) and different-person ones (>= 0.75 -> <= 0.18) apart.
SAME_PERSON_DISTANCE = 0.6
SIMILARITY_SLOPE = 10.0


@dataclass(frozen=True, slots=True)
class Face:
    confidence: float
    x_min: int
    y_min: int
    x_max: int
    y_max: int
    # Five points in original pixels: right eye, left eye, nose tip, right and left mouth corner (YuNet's order).
    landmarks: tuple[tuple[int, int], ...]
    descriptor: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def area(self) -> int:
        return max(0, self.x_max - self.x_min) * max(0, self.y_max - self.y_min)


@dataclass(frozen=True, slots=True)
class Match:
    face: Face
    userid: str  # "unknown" when no registered face is close enough
    confidence: float  # similarity to that user, 0 for unknown


@dataclass(slots=True)
class FaceResult:
    faces: list[Face]
    width: int
    height: int
    inference_ms: float
    process_ms: float
    matches: list[Match] = field(default_factory=list)


def similarity(distance: float) -> float:
    return 1.0 / (1.0 + math.exp(SIMILARITY_SLOPE * (distance - SAME_PERSON_DISTANCE)))


def best_match(gallery: FaceGallery, descriptor: np.ndarray) -> tuple[str | None, float]:
    """The closest registered user and the similarity to them (None, 0 for an empty gallery)."""
    if len(gallery) == 0 or gallery.vectors.shape[1] != descriptor.shape[0]:
        return None, 0.0
    distances = np.linalg.norm(gallery.vectors - descriptor, axis=1)
    best = int(np.argmin(distances))
    return gallery.userids[best], similarity(float(distances[best]))


class FaceWorker:
    """One worker thread's Sessions: the YuNet detector and the dlib descriptor (landmarks + ResNet)."""

    def __init__(self, detector: Session, descriptor: Session) -> None:
        self.detector = detector
        self.descriptor = descriptor
        self.device = detector.device

    def close(self) -> None:
        self.detector.close()
        self.descriptor.close()

    def detect(self, bgr: np.ndarray, threshold: float) -> list[Face]:
        h, w = bgr.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = bgr
        if scale < 1.0:
            small = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        rows = self.detector.run([small, np.array(threshold, np.float32)])[0]
        faces: list[Face] = []
        for row in rows:
            x, y, fw, fh = (float(v) / scale for v in row[:4])
            points = tuple((round(float(row[4 + 2 * i]) / scale), round(float(row[5 + 2 * i]) / scale))
                           for i in range(5))
            box = clip_box((x, y, x + fw, y + fh), w, h)
            if box[2] > box[0] and box[3] > box[1]:
                faces.append(Face(float(row[14]), *box, landmarks=points))
        faces.sort(key=lambda f: f.confidence, reverse=True)
        return faces

    def describe(self, rgb: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        """One 128-d descriptor per face, in the order given."""
        boxes = np.array([(f.x_min, f.y_min, f.x_max, f.y_max) for f in faces], np.int32).reshape(-1, 4)
        return list(self.descriptor.run([rgb, boxes])[0])


class FaceTask:
    def __init__(self, loaded: LoadedTask, max_pixels: int) -> None:
        self.loaded = loaded
        self.max_pixels = max_pixels

    @property
    def inference_device(self) -> str:
        return self.loaded.inference_device

    @property
    def workers(self) -> int:
        return len(self.loaded.pool.sessions)

    def _image(self, image: bytes | np.ndarray) -> np.ndarray:
        return decode_image(image, self.max_pixels) if isinstance(image, bytes) else image

    def _run(self, worker: FaceWorker, image: bytes | np.ndarray, threshold: float, describe: str) -> FaceResult:
        """describe: "" none, "largest" the largest face only, "all" every face."""
        t0 = time.perf_counter()
        bgr = self._image(image)
        t1 = time.perf_counter()
        faces = worker.detect(bgr, threshold)
        if describe and faces:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            chosen = [max(faces, key=lambda f: f.area)] if describe == "largest" else faces
            faces = [Face(f.confidence, f.x_min, f.y_min, f.x_max, f.y_max, f.landmarks, d)
                     for f, d in zip(chosen, worker.describe(rgb, chosen), strict=True)]
        t2 = time.perf_counter()
        self.loaded.record((t2 - t1) * 1000)
        return FaceResult(faces, bgr.shape[1], bgr.shape[0], (t2 - t1) * 1000, (t2 - t0) * 1000)

    async def detect(self, image: bytes | np.ndarray, min_confidence: float) -> FaceResult:
        return await self.loaded.run(lambda w: self._run(w, image, min_confidence, ""))

    async def describe(self, image: bytes | np.ndarray, largest_only: bool = False,
                       threshold: float = FIND_THRESHOLD) -> FaceResult:
        mode = "largest" if largest_only else "all"
        return await self.loaded.run(lambda w: self._run(w, image, threshold, mode))

    async def recognize(self, image: bytes | np.ndarray, gallery: FaceGallery, min_confidence: float,
                        threshold: float = FIND_THRESHOLD) -> FaceResult:
        """Every face with the registered user it matches at `min_confidence` similarity or more, else unknown."""
        result = await self.describe(image, threshold=threshold)
        for face in result.faces:
            assert face.descriptor is not None
            userid, score = best_match(gallery, face.descriptor)
            if userid is not None and score >= min_confidence:
                result.matches.append(Match(face, userid, score))
            else:
                result.matches.append(Match(face, "unknown", 0.0))
        result.matches.sort(key=lambda m: m.confidence, reverse=True)
        return result

    async def match(self, image1: bytes | np.ndarray, image2: bytes | np.ndarray) -> tuple[float, float]:
        """(similarity of the largest face in each image, inference ms); ValueError names an image without a face."""
        first = await self.describe(image1, largest_only=True)
        second = await self.describe(image2, largest_only=True)
        for name, res in (("image1", first), ("image2", second)):
            if not res.faces:
                raise NoFaceError(f"No face detected in {name}")
        a, b = first.faces[0].descriptor, second.faces[0].descriptor
        assert a is not None and b is not None
        return similarity(float(np.linalg.norm(a - b))), first.inference_ms + second.inference_ms


class NoFaceError(ValueError):
    """The image has no face where one is needed (register, match)."""


def _build(registry: ModelRegistry, max_pixels: int) -> LoadedTask:
    count = registry.task_workers()
    landmarks = registry.model_file(LANDMARK_MODEL)
    # Warm each Session inside its opening so the first request does not pay for OpenCV's and dlib's lazy
    # initialisation, and a runtime that loads but cannot run counts as unavailable.
    blank = np.full((160, 160, 3), 128, np.uint8)
    try:
        detectors = registry.open_sessions(
            DETECTOR_MODEL, count, lambda s: s.run([blank, np.array(FIND_THRESHOLD, np.float32)]),
            extra={"score_threshold": str(FIND_THRESHOLD), "nms_threshold": str(NMS_THRESHOLD)})
        try:
            descriptors = registry.open_sessions(
                DESCRIPTOR_MODEL, count, lambda s: s.run([blank, np.array([[40, 40, 120, 120]], np.int32)]),
                extra={LANDMARKS: str(landmarks)})
        except ModelUnavailable:
            for s in detectors.sessions:
                s.close()
            raise
    except ModelUnavailable as exc:
        raise ModelUnavailable(f"face models cannot be loaded: {exc}") from exc
    workers = [FaceWorker(d, e) for d, e in zip(detectors.sessions, descriptors.sessions, strict=True)]
    loaded = LoadedTask(TASK, registry.task_pool(TASK, list(workers)), detectors.kind,
                        [detectors.path.name, landmarks.name, descriptors.path.name],
                        detectors.fallback_reasons + descriptors.fallback_reasons)
    loaded.engine = FaceTask(loaded, max_pixels)
    return loaded


async def get_face_task(registry: ModelRegistry, max_pixels: int) -> FaceTask:
    """The face task of this registry, loaded once on first use."""
    loaded = await registry.get_task(TASK, lambda: _build(registry, max_pixels), {
        DETECTOR_MODEL: registry.task_workers(), DESCRIPTOR_MODEL: registry.task_workers()})
    task: FaceTask = loaded.engine
    return task
