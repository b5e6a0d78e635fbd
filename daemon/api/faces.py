"""CodeProject.AI / DeepStack face routes (seed 001, "Face Recognition"): thin adapters over vision.faces + store."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from ..core import Core
from ..store import StoreError, check_userid
from ..vision.faces import Face, FaceResult, FaceTask, NoFaceError, get_face_task
from .common import CORE, ApiError, Module, parse_fraction, read_form, task_response

MODULE_ID = "FaceProcessing"
MODULE_NAME = "Perch Face Processing"
FACES = Module(MODULE_ID, MODULE_NAME)
MAX_REGISTER_IMAGES = 64


async def face_task(core: Core) -> FaceTask:
    return await get_face_task(core.registry, core.settings.limits.max_pixels)


def _box(face: Face) -> dict[str, int]:
    return {"x_min": face.x_min, "y_min": face.y_min, "x_max": face.x_max, "y_max": face.y_max}


async def _photo(request: web.Request) -> tuple[Core, FaceTask, bytes, float]:
    """What detect and recognize read: one photo, min_confidence (the faces default when absent) and the task."""
    core = request.app[CORE]
    form = await read_form(request)
    image = form.require_file("image")
    min_conf = parse_fraction(form.get("min_confidence"), core.settings.faces.min_confidence)
    return core, await face_task(core), image, min_conf


def _found(request: web.Request, started: float, command: str, task: FaceTask, result: FaceResult,
           preds: list[dict[str, Any]], message: str) -> web.Response:
    return task_response(request, started, FACES, command, task.inference_device, inference_ms=result.inference_ms,
                         process_ms=result.process_ms, message=message, count=len(preds), predictions=preds)


async def detect(request: web.Request) -> web.Response:
    started = time.perf_counter()
    _, task, image, min_conf = await _photo(request)
    result = await task.detect(image, min_conf)
    preds = [{"label": "face", "confidence": round(f.confidence, 4), **_box(f)} for f in result.faces]
    message = f"Found {len(preds)} face{'s' if len(preds) != 1 else ''}" if preds else "No faces found"
    return _found(request, started, "detect", task, result, preds, message)


async def register(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    form = await read_form(request)
    try:
        userid = check_userid(form.get("userid"))
    except StoreError as exc:
        raise ApiError(str(exc)) from exc
    images = [data for _, _, data in form.files if data]
    if not images:
        raise ApiError("no image was sent: attach one or more face photos as files (any field name)")
    if len(images) > MAX_REGISTER_IMAGES:
        raise ApiError(f"at most {MAX_REGISTER_IMAGES} photos per registration, got {len(images)}")
    task = await face_task(core)
    # A few photos at a time, one per worker: both cores describe faces without filling the queue.
    results = []
    step = task.workers
    for i in range(0, len(images), step):
        results += await asyncio.gather(*(task.describe(img, largest_only=True) for img in images[i : i + step]))
    descriptors = [r.faces[0].descriptor for r in results if r.faces]
    if not descriptors:
        raise ApiError("No face detected" + (" in any of the images" if len(images) > 1 else ""))
    try:
        outcome = await asyncio.to_thread(core.store.register_face, userid, descriptors)
    except StoreError as exc:
        raise ApiError(str(exc)) from exc
    message = f"face {outcome}"
    return task_response(request, started, FACES, "register", task.inference_device,
                         inference_ms=sum(r.inference_ms for r in results), message=message, Message=message,
                         userid=userid, faces=len(descriptors))


async def recognize(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core, task, image, min_conf = await _photo(request)
    gallery = await asyncio.to_thread(core.store.gallery)
    result = await task.recognize(image, gallery, min_conf)
    preds = [{"userid": m.userid, "label": m.userid, "confidence": round(m.confidence, 4), **_box(m.face)}
             for m in result.matches]
    known = [p["userid"] for p in preds if p["userid"] != "unknown"]
    if not preds:
        message = "No faces found"
    elif known:
        message = "Found " + ", ".join(dict.fromkeys(known))
    else:
        message = f"Found {len(preds)} unknown face{'s' if len(preds) != 1 else ''}"
    return _found(request, started, "recognize", task, result, preds, message)


async def match(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    form = await read_form(request)
    image1, image2 = form.require_file("image1"), form.require_file("image2")
    task = await face_task(core)
    try:
        similarity, inference_ms = await task.match(image1, image2)
    except NoFaceError as exc:
        raise ApiError(str(exc)) from exc
    return task_response(request, started, FACES, "match", task.inference_device, inference_ms=inference_ms,
                         message=f"Similarity {similarity:.2f}", similarity=round(similarity, 4))


async def face_list(request: web.Request) -> web.Response:
    started = time.perf_counter()
    faces = await asyncio.to_thread(request.app[CORE].store.list_faces)
    return task_response(request, started, FACES, "list", faces=faces, count=len(faces))


async def delete(request: web.Request) -> web.Response:
    started = time.perf_counter()
    form = await read_form(request)
    try:
        userid = check_userid(form.get("userid"))
        deleted = await asyncio.to_thread(request.app[CORE].store.delete_face, userid)
    except StoreError as exc:
        raise ApiError(str(exc)) from exc
    if not deleted:
        raise ApiError(f"userid {userid!r} is not registered")
    return task_response(request, started, FACES, "delete", message=f"face {userid} deleted")


def add_routes(app: web.Application) -> None:
    # "/v1/vision/face/" with the slash is what DeepStack-era clients post detection to.
    for path in ("/v1/vision/face", "/v1/vision/face/"):
        app.router.add_post(path, detect)
    app.router.add_post("/v1/vision/face/register", register)
    app.router.add_post("/v1/vision/face/recognize", recognize)
    app.router.add_post("/v1/vision/face/match", match)
    app.router.add_post("/v1/vision/face/delete", delete)
    app.router.add_post("/v1/vision/face/list", face_list)
    app.router.add_get("/v1/vision/face/list", face_list)
