"""CodeProject.AI / DeepStack vision routes (seed 001): parse the form, call a task, shape the response."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..custom_models import detection_models, valid_name
from ..registry import LoadedModel
from ..vision.classify import get_scene_task
from ..vision.detect import DetectResult
from ..vision.ocr import get_plate_reader
from .common import (
    CORE,
    ApiError,
    Module,
    envelope,
    json_response,
    parse_fraction,
    read_form,
    task_fields,
    task_response,
)

MODULE_ID = "ObjectDetectionPerch"
MODULE_NAME = "Perch Object Detection"
DETECTION = Module(MODULE_ID, MODULE_NAME)
SCENE = Module("SceneClassifier", "Perch Scene Classifier")
ALPR = Module("ALPR", "Perch License Plate Reader")


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
        **task_fields(DETECTION, "detect", model.inference_device, inference_ms=result.inference_ms,
                      process_ms=result.process_ms, provider=model.kind.upper(), gpu=model.kind != "cpu"),
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


async def custom_list(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    # Re-read the custom-model directory: a model dropped in (or imported) is listed without a restart.
    problems = await core.rescan_custom_models()
    models = detection_models(core.manifest)
    return task_response(request, started, DETECTION, "list", message=f"{len(models)} models", models=models,
                         count=len(models), problems=problems)


async def custom_detection(request: web.Request) -> web.Response:
    core = request.app[CORE]
    name = request.match_info["model"]
    # A plain identifier only: the name picks a file on disk, so "..", separators and NUL never get that far.
    if not valid_name(name):
        raise ApiError(f"invalid model name {name!r}: use letters, digits, '-' and '_'")
    entry = core.manifest.models.get(name)
    if entry is None:
        await core.rescan_custom_models()
        entry = core.manifest.models.get(name)
    if entry is None or entry.task != "detection":
        raise ApiError(f"unknown model {name!r}; see /v1/vision/custom/list")
    return await run_detection(request, name)


async def scene(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    form = await read_form(request)
    image = form.require_file("image")
    task = await get_scene_task(core.registry, core.settings.limits.max_pixels)
    result = await task.classify(image)
    return task_response(request, started, SCENE, "detect", task.loaded.inference_device,
                         inference_ms=result.inference_ms, process_ms=result.process_ms,
                         message=f"Scene: {result.label}", label=result.label, confidence=round(result.confidence, 4))


async def alpr(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    form = await read_form(request)
    image = form.require_file("upload", "image")
    min_conf = parse_fraction(form.get("min_confidence"), 0.0)
    reader = await get_plate_reader(core.registry, core.settings.limits.max_pixels)
    result = await reader.read(image)
    preds = [{"label": f"Plate: {p.plate}", "plate": p.plate, "confidence": round(p.confidence, 4),
              "x_min": p.x_min, "y_min": p.y_min, "x_max": p.x_max, "y_max": p.y_max}
             for p in result.plates if p.confidence >= min_conf]
    return task_response(request, started, ALPR, "alpr", reader.loaded.inference_device,
                         inference_ms=result.inference_ms, process_ms=result.process_ms,
                         message=summary([p["label"] for p in preds]) if preds else "No plates found",
                         count=len(preds), predictions=preds)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/vision/detection", detection)
    # "list" first: it must not be taken for a model called "list".
    app.router.add_post("/v1/vision/custom/list", custom_list)
    app.router.add_get("/v1/vision/custom/list", custom_list)
    app.router.add_post("/v1/vision/custom/{model}", custom_detection)
    app.router.add_post("/v1/vision/scene", scene)
    app.router.add_post("/v1/vision/alpr", alpr)
    app.router.add_post("/v1/image/alpr", alpr)
