"""Ultralytics HUB inference dialect (seed 004): `POST /v1/predict/<model_id>`.

Multipart `image` (or `url`), `size` 32..1280, `confidence` 0.01..1 (0.25), `iou` 0..0.95 (0.45), `normalize`;
key in the `x-api-key` header. Answer: {success, message: "Inference complete.", data: [{name, class, confidence,
box: {x1, y1, x2, y2}}]}, boxes in pixels of the uploaded image, or 0..1 fractions of its width/height when
`normalize` is true. `size` is checked and otherwise ignored: each model runs at its own input size. Errors are
{success: false, message} with a real HTTP status (400 bad argument, 401 key, 404 unknown model, 503 busy).
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from ..vision.types import Detection
from . import auth
from .common import CORE, ApiError, json_response, parse_bool, read_form
from .dialects import class_numbers, detect_bytes, failure, fetch, get_model

NAME = "ultralytics"


def _error(message: str, status: int) -> web.Response:
    return json_response({"success": False, "message": message}, status)


def _refusal(request: web.Request, message: str, status: int) -> web.Response:
    return _error(message, status)


def _number(raw: str | None, name: str, default: float, low: float, high: float, integer: bool = False) -> float:
    if raw is None:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError as exc:
        kind = "an integer" if integer else "a number"
        raise ApiError(f"'{name}' must be {kind} in the range {low:g} - {high:g}, got {raw!r}") from exc
    if math.isnan(value) or not low <= value <= high:
        raise ApiError(f"'{name}' must be in the range {low:g} - {high:g}, got {raw!r}")
    return value


def shape(dets: list[Detection], classes: dict[str, int], width: int, height: int,
          normalize: bool) -> list[dict[str, Any]]:
    out = []
    for d in dets:
        if normalize:
            box: dict[str, float] = {"x1": d.x_min / width, "y1": d.y_min / height,
                                     "x2": d.x_max / width, "y2": d.y_max / height}
        else:
            box = {"x1": d.x_min, "y1": d.y_min, "x2": d.x_max, "y2": d.y_max}
        out.append({"name": d.label, "class": classes.get(d.label, -1), "confidence": d.confidence, "box": box})
    return out


@auth.dialect(NAME)
async def predict(request: web.Request) -> web.Response:
    core = request.app[CORE]
    try:
        form = await read_form(request)
        _number(form.get("size"), "size", 640, 32, 1280, integer=True)
        confidence = _number(form.get("confidence"), "confidence", 0.25, 0.01, 1.0)
        iou = _number(form.get("iou"), "iou", 0.45, 0.0, 0.95)
        normalize = parse_bool(form.get("normalize"), "'normalize'")
        data = form.file("image")
        if data is None and form.get("url"):
            data = await fetch(core, form.get("url") or "")
        if data is None:
            raise ApiError("no image: send a file in the form field 'image' or an image address in 'url'")
        model = await get_model(core, request.match_info["model_id"])
        result = await detect_bytes(core, model, data, confidence, iou)
    except Exception as exc:
        status, message = failure(request, exc)
        return _error(message, status)
    data_out = shape(result.detections, class_numbers(model), result.width, result.height, normalize)
    return json_response({"success": True, "message": "Inference complete.", "data": data_out})


def add_routes(app: web.Application) -> None:
    auth.install(app)
    auth.register_refusal(NAME, _refusal)
    app.router.add_post("/v1/predict/{model_id}", predict)
