"""CodeProject.AI image-processing routes (seed 001, "Image Processing"): results come back as base64 images."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from aiohttp import web

from ..vision.enhance import CARTOON_MODELS, cartoon_model_id, get_cartoon_task, get_superres_task
from ..vision.segment import ImageOutput, get_segment_task
from .common import CORE, ApiError, Module, parse_bool, parse_fraction, read_form, task_response

BACKGROUND = Module("BackgroundRemover", "Perch Background Remover")
PORTRAIT = Module("PortraitFilter", "Perch Portrait Filter")
SUPERRES = Module("SuperResolution", "Perch Super Resolution")
CARTOON = Module("Cartooniser", "Perch Cartooniser")


async def _respond(request: web.Request, started: float, module: Module, command: str, out: ImageOutput,
                   device: str, field: str = "imageBase64", **extra: Any) -> web.Response:
    # Megabytes of base64 are encoded on a thread: the event loop keeps serving other requests meanwhile.
    encoded = await asyncio.to_thread(lambda: base64.b64encode(out.data).decode("ascii"))
    return task_response(request, started, module, command, device, inference_ms=out.inference_ms,
                         process_ms=out.process_ms, **extra, **{field: encoded}, mimeType=out.mime,
                         width=out.width, height=out.height)


async def remove_background(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    form = await read_form(request)
    image = form.require_file("image")
    matting = parse_bool(form.get("use_alphamatting"), "use_alphamatting")
    task = await get_segment_task(core.registry, core.settings.limits.max_pixels)
    out = await task.remove_background(image, matting)
    return await _respond(request, started, BACKGROUND, "removebackground", out, task.loaded.inference_device,
                          message="Background removed")


async def portrait_filter(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    form = await read_form(request)
    image = form.require_file("image")
    strength = parse_fraction(form.get("strength"), 0.5, "strength")
    task = await get_segment_task(core.registry, core.settings.limits.max_pixels)
    out = await task.portrait(image, strength)
    return await _respond(request, started, PORTRAIT, "filter", out, task.loaded.inference_device,
                          field="filtered_image", message="Background blurred")


async def super_resolution(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    form = await read_form(request)
    image = form.require_file("image")
    task = await get_superres_task(core.registry, core.settings.limits.max_pixels)
    out = await task.upscale(image)
    return await _respond(request, started, SUPERRES, "superresolution", out, task.loaded.inference_device,
                          message=f"Upscaled {task.scale}x to {out.width}×{out.height}")


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
    return await _respond(request, started, CARTOON, "cartoonise", out, task.loaded.inference_device,
                          message="Cartoonised", model=model_id)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/image/removebackground", remove_background)
    app.router.add_post("/v1/image/portraitfilter", portrait_filter)
    app.router.add_post("/v1/image/superresolution", super_resolution)
    app.router.add_post("/v1/image/cartoonise", cartoonise)
    # The British spelling is CodeProject.AI's; the American one costs nothing.
    app.router.add_post("/v1/image/cartoonize", cartoonise)
