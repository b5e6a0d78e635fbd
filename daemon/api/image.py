"""CodeProject.AI image-processing routes (seed 001, "Image Processing"): results come back as base64 images."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from aiohttp import web

from ..vision.enhance import CARTOON_MODELS, cartoon_model_id, get_cartoon_task, get_superres_task
from ..vision.segment import ImageOutput, get_segment_task
from .common import CORE, ApiError, envelope, json_response, parse_fraction, read_form

MODULE_NAMES = {
    "BackgroundRemover": "Perch Background Remover",
    "PortraitFilter": "Perch Portrait Filter",
    "SuperResolution": "Perch Super Resolution",
    "Cartooniser": "Perch Cartooniser",
}


def parse_bool(raw: str | None, name: str, default: bool = False) -> bool:
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ApiError(f"{name} must be true or false, got {raw!r}")


async def _payload(module_id: str, command: str, out: ImageOutput, device: str, field: str = "imageBase64"
                   ) -> dict[str, Any]:
    # Megabytes of base64 are encoded on a thread: the event loop keeps serving other requests meanwhile.
    encoded = await asyncio.to_thread(lambda: base64.b64encode(out.data).decode("ascii"))
    return {
        field: encoded,
        "mimeType": out.mime,
        "width": out.width,
        "height": out.height,
        "inferenceMs": round(out.inference_ms),
        "processMs": round(out.process_ms),
        "moduleId": module_id,
        "moduleName": MODULE_NAMES[module_id],
        "command": command,
        "inferenceDevice": device,
        "executionProvider": device,
        "canUseGPU": False,
    }


async def remove_background(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    form = await read_form(request)
    image = form.require_file("image")
    matting = parse_bool(form.get("use_alphamatting"), "use_alphamatting")
    task = await get_segment_task(core.registry, core.settings.limits.max_pixels)
    out = await task.remove_background(image, matting)
    return json_response(envelope(request, started, message="Background removed",
                                  **await _payload("BackgroundRemover", "removebackground", out,
                                             task.loaded.inference_device)))


async def portrait_filter(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    form = await read_form(request)
    image = form.require_file("image")
    strength = parse_fraction(form.get("strength"), 0.5, "strength")
    task = await get_segment_task(core.registry, core.settings.limits.max_pixels)
    out = await task.portrait(image, strength)
    return json_response(envelope(request, started, message="Background blurred",
                                  **await _payload("PortraitFilter", "filter", out, task.loaded.inference_device,
                                             field="filtered_image")))


async def super_resolution(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    form = await read_form(request)
    image = form.require_file("image")
    task = await get_superres_task(core.registry, core.settings.limits.max_pixels)
    out = await task.upscale(image)
    return json_response(envelope(request, started, message=f"Upscaled {task.scale}x to {out.width}×{out.height}",
                                  **await _payload("SuperResolution", "superresolution", out,
                                             task.loaded.inference_device)))


async def cartoonise(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    form = await read_form(request)
    image = form.require_file("image")
    name = form.get("model")
    try:
        model_id = cartoon_model_id(name)
    except KeyError as exc:
        raise ApiError(f"unknown cartoon model {name!r}; available: {', '.join(sorted(CARTOON_MODELS))}") from exc
    task = await get_cartoon_task(core.registry, model_id, core.settings.limits.max_pixels)
    out = await task.cartoonise(image)
    return json_response(envelope(request, started, message="Cartoonised", model=model_id,
                                  **await _payload("Cartooniser", "cartoonise", out, task.loaded.inference_device)))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/image/removebackground", remove_background)
    app.router.add_post("/v1/image/portraitfilter", portrait_filter)
    app.router.add_post("/v1/image/superresolution", super_resolution)
    app.router.add_post("/v1/image/cartoonise", cartoonise)
    # The British spelling is CodeProject.AI's; the American one costs nothing.
    app.router.add_post("/v1/image/cartoonize", cartoonise)
