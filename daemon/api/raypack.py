"""RAYPACK dialect (seed 000): `POST /recog` and `POST /getmodels`.

Form fields: apikey, threshold (0..1), file (an uploaded file) or url, model, lang (en|de), mode (json|image|
jsonimage), facemode (default|pixel|fill|black), facefinder (1..3, accepted; faces are found at one scale), hex.
Models: 1 multi-object tags, 2 food (the detector's food classes), 3 "celebrity" = people registered in the face
store, 4 Face AI (pixel boxes; mode=image/jsonimage draws them per facemode in the hex colour), 41 face v4
(normalised boxes), 5 demographics and 6 fashion (not installed: an error says so). Without `model`, a request
with face options (mode, facemode, hex) means model 4, as in the seed's Face AI example; otherwise model 1.
Answer: the RAYPACK container {name, version, license, results: {stats, tags | totalfaces + faces}}; tag values
are strings with 8 decimals like the seed. mode=image answers the JPEG itself; jsonimage adds it to the JSON as
base64 in results.image. Errors: the container with `error` and `code`, and that HTTP status.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from ..core import Core
from ..vision.annotate import FACE_MODES, anonymise, encode_jpeg, parse_hex
from ..vision.labels_de import translate
from . import auth
from .common import CORE, ApiError, Form, json_response, parse_fraction, read_form
from .dialects import decode, detect_bytes, failure, fetch, get_model

NAME = "raypack"
CONTAINER = {"name": "Raypack_AI_Filecontainer", "version": "1.0", "license": "local"}
MODES = ("json", "image", "jsonimage")
# YuNet score below which a face is not reported (OpenCV Zoo's default).
FACE_THRESHOLD = 0.6
# The detector's COCO classes that are food.
FOOD = frozenset({"banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
                  "cake"})


@dataclass(frozen=True)
class RayModel:
    id: str
    name: str
    description: str
    kind: str  # objects | food | celebrity | faces | faces_v4 | missing


MODELS: dict[str, RayModel] = {m.id: m for m in (
    RayModel("1", "Raypack_General", "Multi-object detection (80 COCO classes)", "objects"),
    RayModel("2", "Raypack_Food", "Food detection (the food classes of the object detector)", "food"),
    RayModel("3", "Raypack Celeb US", "People registered in the face store (POST /v1/vision/face/register)",
             "celebrity"),
    RayModel("4", "RaypackFace", "Face AI: face boxes in pixels, anonymised images", "faces"),
    RayModel("41", "Raypack_Face_V4", "Face AI v4: normalised face boxes", "faces_v4"),
    RayModel("5", "Raypack_Demographics", "Demographics (age, gender) — no model installed", "missing"),
    RayModel("6", "Raypack_Clothes", "Fashion (clothing items) — no model installed", "missing"),
)}


class RayError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _error(message: str, status: int) -> web.Response:
    return json_response({**CONTAINER, "error": message, "code": status}, status)


def _refusal(request: web.Request, message: str, status: int) -> web.Response:
    return _error(message, status)


def _threshold(raw: str | None, default: float) -> float:
    # A blank threshold (the seed's forms send "threshold= ") means the default.
    return parse_fraction(raw if raw and raw.strip() else None, default, "threshold")


def _choose_model(form: Form) -> RayModel:
    requested = form.get("model")
    if requested is None:
        face_options = any(form.get(k) for k in ("mode", "facemode", "hex"))
        requested = "4" if face_options else "1"
    model = MODELS.get(requested.strip())
    if model is None:
        raise ApiError(f"unknown model {requested!r}; models: {', '.join(MODELS)} (see POST /getmodels)")
    if model.kind == "missing":
        raise RayError(f"model {model.id} ({model.description.split(' —')[0]}) is not installed on this server", 404)
    return model


async def _image(core: Core, form: Form) -> tuple[bytes, str]:
    for name, filename, data in form.files:
        if name == "file":
            if not data:
                raise ApiError("the uploaded file is empty")
            return data, filename or "upload"
    url = form.get("url")
    if url:
        return await fetch(core, url), url
    text = form.get("file")
    if text:
        # The seed's examples read `-F "file=photo.jpg"`, which makes curl send the name, not the photo.
        raise ApiError(f"the field 'file' holds the text {text!r}, not a file: upload it with -F \"file=@{text}\"")
    raise ApiError("no image: upload a file in the field 'file' or pass an image address in 'url'")


def _tags(labels_scores: list[tuple[str, float]], lang: str) -> list[dict[str, str]]:
    best: dict[str, float] = {}
    for label, score in labels_scores:
        best[label] = max(score, best.get(label, 0.0))
    ranked = sorted(best.items(), key=lambda kv: kv[1], reverse=True)
    return [{"name": translate(label, lang), "value": f"{score:.8f}"} for label, score in ranked]


def _stats(model: RayModel, original: str, started: float) -> dict[str, Any]:
    ended = time.time()
    return {"modelname": model.name, "modelid": model.id, "originalfile": original,
            "starttime": int(started * 1000), "endtime": int(ended * 1000), "duration": round(ended - started, 3)}


async def _objects(core: Core, model: RayModel, data: bytes, threshold: float, lang: str) -> list[dict[str, str]]:
    loaded = await get_model(core, "default")
    result = await detect_bytes(core, loaded, data, threshold)
    dets = [d for d in result.detections if model.kind == "objects" or d.label in FOOD]
    return _tags([(d.label, d.confidence) for d in dets], lang)


async def _face_task(core: Core) -> Any:
    from ..vision.faces import get_face_task  # the face models load on first use only

    return await get_face_task(core.registry, core.settings.limits.max_pixels)


async def _gallery(core: Core) -> Any:
    # The store opens its SQLite file on first use and reads the gallery once per change: off the event loop.
    return await asyncio.to_thread(lambda: core.store.gallery())


async def _celebrity(core: Core, data: bytes, threshold: float) -> list[dict[str, Any]]:
    task = await _face_task(core)
    gallery = await _gallery(core)
    result = await task.recognize(data, gallery, core.settings.faces.min_confidence, threshold=threshold)
    w, h = result.width, result.height
    tags = []
    for match in result.matches:
        if match.userid == "unknown":
            continue  # a celebrity model names the people it knows; others are not celebrities
        f = match.face
        tags.append({"top": f.y_min / h, "left": f.x_min / w, "bottom": f.y_max / h, "right": f.x_max / w,
                     "idents": [{"name": match.userid, "value": round(match.confidence, 8)}]})
    return tags


@auth.dialect(NAME)
async def recog(request: web.Request) -> web.Response:
    started = time.time()
    core = request.app[CORE]
    try:
        form = await read_form(request)
        model = _choose_model(form)
        lang = (form.get("lang") or "en").lower()
        mode = (form.get("mode") or "json").lower()
        if mode not in MODES:
            raise ApiError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        facemode = (form.get("facemode") or "default").lower()
        if facemode not in FACE_MODES:
            raise ApiError(f"facemode must be one of {', '.join(FACE_MODES)}, got {facemode!r}")
        try:
            color = parse_hex(form.get("hex"))
        except ValueError as exc:
            raise ApiError(str(exc)) from exc
        facefinder = form.get("facefinder") or "3"
        if facefinder not in ("1", "2", "3"):
            raise ApiError(f"facefinder must be 1, 2 or 3, got {facefinder!r}")
        default = core.settings.detection.min_confidence if model.kind in ("objects", "food") else FACE_THRESHOLD
        threshold = _threshold(form.get("threshold"), default)
        data, original = await _image(core, form)
        results: dict[str, Any] = {"stats": {}}
        image: bytes | None = None
        if model.kind in ("objects", "food"):
            results["tags"] = await _objects(core, model, data, threshold, lang)
        elif model.kind == "celebrity":
            results["tags"] = await _celebrity(core, data, threshold)
        else:
            faces, image = await _faces(core, model, data, threshold, mode, facemode, color)
            results.update(totalfaces=len(faces), faces=faces)
        results["stats"] = _stats(model, original, started)
    except RayError as exc:
        return _error(exc.message, exc.status)
    except Exception as exc:
        status, message = failure(request, exc)
        return _error(message, status)
    if image is not None and mode == "image":
        return web.Response(body=image, content_type="image/jpeg")
    if image is not None:
        results["image"] = base64.b64encode(image).decode()
    return json_response({**CONTAINER, "results": results})


async def _faces(core: Core, model: RayModel, data: bytes, threshold: float, mode: str, facemode: str,
                 color: tuple[int, int, int]) -> tuple[list[dict[str, Any]], bytes | None]:
    task = await _face_task(core)
    wants_image = mode != "json"
    bgr: np.ndarray | None = await decode(core, data) if wants_image else None
    result = await task.detect(bgr if bgr is not None else data, threshold)
    w, h = result.width, result.height
    if model.kind == "faces":
        faces = [{"xpos": f.x_min, "ypos": f.y_min, "width": f.x_max - f.x_min, "height": f.y_max - f.y_min,
                  "score": f.confidence} for f in result.faces]
    else:
        faces = [{"top": f.y_min / h, "left": f.x_min / w, "right": f.x_max / w, "bottom": f.y_max / h}
                 for f in result.faces]
    image = None
    if bgr is not None:
        boxes = [(f.x_min, f.y_min, f.x_max, f.y_max) for f in result.faces]
        stroke = max(2, round(max(w, h) / 300))
        image = await asyncio.to_thread(lambda: encode_jpeg(anonymise(bgr, boxes, facemode, color, stroke)))
    return faces, image


def _installed(core: Core, model: RayModel) -> bool:
    if model.kind == "missing":
        return False
    if model.kind in ("objects", "food"):
        return True
    try:
        from ..vision import faces
    except ImportError:
        return False
    return all(m in core.manifest.models for m in (faces.DETECTOR_MODEL, faces.DESCRIPTOR_MODEL))


@auth.dialect(NAME)
async def getmodels(request: web.Request) -> web.Response:
    core = request.app[CORE]
    models = [{"modelid": m.id, "modelname": m.name, "description": m.description, "installed": _installed(core, m)}
              for m in MODELS.values()]
    return json_response({**CONTAINER, "results": {"models": models}})


def add_routes(app: web.Application) -> None:
    auth.install(app)
    auth.register_refusal(NAME, _refusal)
    app.router.add_post("/recog", recog)
    app.router.add_post("/getmodels", getmodels)
    app.router.add_get("/getmodels", getmodels)
