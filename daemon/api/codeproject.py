"""CodeProject.AI / DeepStack vision routes (seed 001): parse the form, call a task, shape the response."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..registry import LoadedModel
from ..vision.detect import DetectResult
from .common import CORE, envelope, json_response, parse_fraction, read_form

MODULE_ID = "ObjectDetectionPerch"
MODULE_NAME = "Perch Object Detection"


def prediction(det: Any) -> dict[str, Any]:
    return {
        "label": det.label,
        "confidence": round(det.confidence, 4),
        "x_min": det.x_min,
        "y_min": det.y_min,
        "x_max": det.x_max,
        "y_max": det.y_max,
    }


def summary(labels: list[str]) -> str:
    if not labels:
        return "No objects found"
    return "Found " + ", ".join(dict.fromkeys(labels))


def detection_payload(model: LoadedModel, result: DetectResult) -> dict[str, Any]:
    # Detector output is already sorted by confidence, highest first: Frigate stops at the first one below its
    # threshold.
    preds = [prediction(d) for d in result.detections]
    return {
        "message": summary([p["label"] for p in preds]),
        "count": len(preds),
        "predictions": preds,
        "inferenceMs": round(result.inference_ms),
        "processMs": round(result.process_ms),
        "moduleId": MODULE_ID,
        "moduleName": MODULE_NAME,
        "command": "detect",
        "inferenceDevice": model.inference_device,
        "executionProvider": model.kind.upper() if model.kind != "cpu" else "CPU",
        "canUseGPU": model.kind != "cpu",
    }


async def run_detection(request: web.Request, model_id: str | None) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    form = await read_form(request)
    image = form.require_file("image")
    min_conf = parse_fraction(form.get("min_confidence"), core.settings.detection.min_confidence)
    model = await core.registry.get(model_id or core.registry.default_model_id())
    result = await model.detect_bytes(image, min_conf, core.settings.limits.max_pixels)
    return json_response(envelope(request, started, **detection_payload(model, result)))


async def detection(request: web.Request) -> web.Response:
    return await run_detection(request, None)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/vision/detection", detection)
