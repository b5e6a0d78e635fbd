"""Helpers the cloud dialects share (Ultralytics, Roboflow, RAYPACK): model ids, images by upload or URL, class
numbers, and detection with a caller-chosen NMS IoU. No inference here: models run on their scheduler workers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import cache

import numpy as np
from aiohttp import web

from ..core import Core
from ..fetch import FetchError, fetch_image
from ..registry import LoadedModel, ModelUnavailable
from ..vision.detect import NMS_IOU, DetectResult
from ..vision.image import decode_image
from .middleware import EXPECTED_REFUSALS, status_for

log = logging.getLogger("perch.http")

DEFAULT_WORDS = ("default", "auto")


class UnknownModel(Exception):
    """The path names no detection model this daemon knows; the message lists the ones it does."""


def detection_model_ids(core: Core) -> list[str]:
    return [mid for mid, entry in core.manifest.models.items() if entry.task == "detection"]


def resolve_model_id(core: Core, requested: str | None) -> str:
    """A manifest detection model id, or the word `default` (also `auto`) for the configured default."""
    if not requested or requested.lower() in DEFAULT_WORDS:
        return core.registry.default_model_id()
    if requested in core.manifest.models and core.manifest.models[requested].task == "detection":
        return requested
    known = ", ".join(["default", *detection_model_ids(core)])
    raise UnknownModel(f"unknown model {requested!r}; this server has: {known}")


async def get_model(core: Core, requested: str | None) -> LoadedModel:
    return await core.registry.get(resolve_model_id(core, requested))


async def fetch(core: Core, url: str) -> bytes:
    """The image at `url`, under the `fetch.*` policy (FetchError when disabled or refused)."""
    return await fetch_image(core.settings.fetch, url)


async def decode(core: Core, data: bytes) -> np.ndarray:
    """Decode on a worker thread: needed when the answer is a picture drawn over the upload."""
    return await asyncio.to_thread(decode_image, data, core.settings.limits.max_pixels)


async def detect_bytes(core: Core, model: LoadedModel, data: bytes, min_confidence: float,
                       iou: float = NMS_IOU) -> DetectResult:
    return await model.detect_bytes(data, min_confidence, core.settings.limits.max_pixels, iou=iou)


async def detect_frame(model: LoadedModel, bgr: np.ndarray, min_confidence: float,
                       iou: float = NMS_IOU) -> DetectResult:
    return await model.detect_frame(bgr, min_confidence, iou=iou)


def class_numbers(model: LoadedModel) -> dict[str, int]:
    """Label -> class number, counting only real labels: SSD's 90-line COCO file (with "n/a" gaps) numbers its
    classes like the 80-class YOLO set, which is what Ultralytics/Roboflow clients expect (person 0, tie 27)."""
    return _class_numbers(tuple(model.detector.labels))


def label_numbers(labels: Sequence[str]) -> dict[str, int]:
    """class_numbers for a label list, for answers about a model that need not be loaded."""
    return _class_numbers(tuple(labels))


@cache
def _class_numbers(labels: tuple[str, ...]) -> dict[str, int]:
    real = [label for label in labels if label not in ("n/a", "???", "")]
    return {label: i for i, label in enumerate(dict.fromkeys(real))}


def failure(request: web.Request, exc: Exception) -> tuple[int, str]:
    """(HTTP status, message) for a failed request, for dialects that answer errors in their own shape.
    Call it from an `except` block: unexpected failures are logged with their traceback."""
    if isinstance(exc, UnknownModel):
        return 404, str(exc)
    if isinstance(exc, FetchError):
        return exc.status, exc.message
    if isinstance(exc, web.HTTPException):
        return exc.status, exc.reason or "request refused"
    status, message = status_for(exc)
    if status >= 500 and not isinstance(exc, EXPECTED_REFUSALS):
        log.exception("%s %s failed", request.method, request.path)
    return status, message


__all__ = ["ModelUnavailable", "UnknownModel", "class_numbers", "decode", "detect_bytes", "detect_frame", "failure",
           "fetch", "get_model", "label_numbers", "resolve_model_id"]
