"""Roboflow hosted-inference dialect (seed 003): `POST /<dataset>/<version>`.

`<dataset>` is any detection model id of the manifest or `default`; `<version>` any positive integer (ignored).
The image is the request body in base64 (sent as application/x-www-form-urlencoded by the docs' curl, axios,
Kotlin…; `data:` URLs, line breaks and URL-encoding are tolerated), a multipart `file`, or `?image=<url>`.
Query: api_key, confidence and overlap (0..100, defaults 40 and 30; values up to 1 are read as fractions, which is
what Roboflow's inference-sdk sends), classes (comma list), format=json|image|image_and_json, stroke, labels, name.
Answer: {time, image: {width, height}, predictions: [{x, y, width, height, confidence, class, class_id,
detection_id}]} with x, y the box centre in pixels; format=image answers an annotated JPEG, image_and_json adds it
in base64 as `visualization`. A bad key is 403 {"Message": "User is not authorized to access this resource"}.

Roboflow's `roboflow` pip package reads its management API (at its `API_URL`) before it predicts; a read-only
slice of it lives under /roboflow so the package runs with API_URL=http://<perch>/roboflow and
OBJECT_DETECTION_URL=http://<perch>: `POST /roboflow/` (the key check, naming the workspace), `GET
/roboflow/<workspace>` (its projects: the manifest's detection models) and `GET /roboflow/<workspace>/<project>`
(the project and its versions 1..MAX_VERSIONS; the package picks the one it was asked for from that list).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
import uuid
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from ..vision.annotate import color_for, draw_boxes, encode_jpeg
from ..vision.detect import DetectResult
from ..vision.types import Detection
from . import auth
from .common import CORE, ApiError, json_response, parse_number, read_form
from .dialects import (
    ModelUnavailable,
    UnknownModel,
    class_numbers,
    decode,
    detect_bytes,
    detect_frame,
    detection_model_ids,
    failure,
    fetch,
    get_model,
    label_numbers,
    resolve_model_id,
)

NAME = "roboflow"
NOT_AUTHORIZED = "User is not authorized to access this resource"
FORMATS = ("json", "image", "image_and_json")
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF")


def _refusal(request: web.Request, message: str, status: int) -> web.Response:
    if status in (401, 403):
        return json_response({"Message": NOT_AUTHORIZED}, 403)
    return json_response({"message": message}, status)


def _percent(raw: str | None, name: str, default: float) -> float:
    """0..100 as in the hosted API docs; a value up to 1 is already a fraction (inference-sdk sends those)."""
    value = parse_number(raw or None, default, name, 0, 100)
    return value if value <= 1 else value / 100


def _flag(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("1", "true", "yes", "on")


def decode_body(raw: bytes) -> bytes:
    """The image in a hosted-API body: base64 text (maybe a data: URL, wrapped or URL-encoded), or raw bytes."""
    if raw.startswith(IMAGE_MAGIC):
        return raw
    text = raw.strip()
    if text.startswith(b"data:") and b"," in text:
        text = text.split(b",", 1)[1]
    if b"%" in text:
        text = unquote_to_bytes(text)
    # Line breaks come from `base64` wrapping; spaces are '+' signs that went through form decoding.
    text = text.replace(b"\r", b"").replace(b"\n", b"").replace(b" ", b"+")
    text += b"=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError("the request body is not a base64-encoded image") from exc
    if not data:
        raise ApiError("no image: POST a base64-encoded image as the body or pass ?image=<url>")
    return data


async def _image(request: web.Request) -> bytes:
    url = request.query.get("image")
    if url:
        return await fetch(request.app[CORE], url)
    if request.content_type.startswith("multipart/"):
        data = (await read_form(request)).file("file", "image")
        if data is None:
            raise ApiError("no image: send a file in the form field 'file'")
        return data
    raw = await request.read()
    if not raw.strip():
        raise ApiError("no image: POST a base64-encoded image as the body or pass ?image=<url>")
    return decode_body(raw)


def predictions(result: DetectResult, classes: dict[str, int]) -> list[dict[str, Any]]:
    return [{
        "x": (d.x_min + d.x_max) / 2,
        "y": (d.y_min + d.y_max) / 2,
        "width": d.width,
        "height": d.height,
        "confidence": round(d.confidence, 4),
        "class": d.label,
        "class_id": classes.get(d.label, -1),
        "detection_id": str(uuid.uuid4()),
    } for d in result.detections]


def _render(bgr: Any, dets: list[Detection], stroke: int, labels: bool) -> bytes:
    boxes = [(d.x_min, d.y_min, d.x_max, d.y_max) for d in dets]
    captions = [f"{d.label} {d.confidence:.2f}" for d in dets] if labels else None
    return encode_jpeg(draw_boxes(bgr, boxes, captions, [color_for(d.label) for d in dets], stroke))


@auth.dialect(NAME)
async def infer(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    core = request.app[CORE]
    query = request.query
    try:
        if int(request.match_info["version"]) < 1:
            raise ApiError("the version must be a positive integer", 404)
        confidence = _percent(query.get("confidence"), "confidence", 0.40)
        overlap = _percent(query.get("overlap"), "overlap", 0.30)
        fmt = (query.get("format") or "json").lower()
        if fmt not in FORMATS:
            raise ApiError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        try:
            stroke = int(query.get("stroke") or 1)
        except ValueError as exc:
            raise ApiError(f"stroke must be a whole number of pixels, got {query.get('stroke')!r}") from exc
        if not 1 <= stroke <= 100:
            raise ApiError("stroke must be between 1 and 100 pixels")
        wanted = {c.strip() for c in (query.get("classes") or "").split(",") if c.strip()}
        model = await get_model(core, request.match_info["dataset"])
        data = await _image(request)
        if fmt == "json":
            result = await detect_bytes(core, model, data, confidence, overlap)
            bgr = None
        else:
            bgr = await decode(core, data)
            result = await detect_frame(model, bgr, confidence, overlap)
    except Exception as exc:
        status, message = failure(request, exc)
        return json_response({"message": message}, status)
    if wanted:
        result.detections = [d for d in result.detections if d.label in wanted]
    if bgr is not None:
        jpeg = await asyncio.to_thread(_render, bgr, result.detections, stroke, _flag(query.get("labels")))
        if fmt == "image":
            return web.Response(body=jpeg, content_type="image/jpeg")
    payload: dict[str, Any] = {
        "time": round(time.perf_counter() - started, 4),
        "image": {"width": result.width, "height": result.height},
        "predictions": predictions(result, class_numbers(model)),
    }
    if bgr is not None:
        payload["visualization"] = base64.b64encode(jpeg).decode()
    return json_response(payload)


# ---- management API: what the `roboflow` package reads before it predicts ----------------------------------------

API_NAME = "roboflow-api"
API_PREFIX = "/roboflow"
WORKSPACE = "perch"
# The package lists a project's versions and picks the number it was given; a list cannot hold every positive
# integer, so it holds the first hundred (the inference route itself takes any).
MAX_VERSIONS = 100
OBJECT_DETECTION = "object-detection"
EMPTY_SPLITS = {"train": 0, "valid": 0, "test": 0}


def _api_error(message: str, status: int) -> web.Response:
    return json_response({"error": {"message": message, "status": status}}, status)


def _api_refusal(request: web.Request, message: str, status: int) -> web.Response:
    # 401 rather than the inference route's 403: the package's key check stops at once on a 401 and retries
    # anything else five times, a second apart, before a misleading "error validating the api key".
    if status in (401, 403):
        return _api_error(NOT_AUTHORIZED, 401)
    return _api_error(message, status)


def _hex(label: str) -> str:
    b, g, r = color_for(label)
    return f"#{r:02X}{g:02X}{b:02X}"


async def _project(request: web.Request, workspace: str, name: str, *, strict: bool = True) -> dict[str, Any]:
    """A manifest detection model (or `default`) as a Roboflow project: its labels are the classes. `strict=False`
    lists a model whose label file is missing with no classes, instead of failing the whole workspace listing."""
    core = request.app[CORE]
    model_id = resolve_model_id(core, name)
    try:
        labels = await asyncio.to_thread(core.registry.labels, model_id)
    except ModelUnavailable:
        if strict:
            raise
        labels = []
    numbered = label_numbers(labels)
    created = int(core.started)
    return {
        "id": f"{workspace}/{name}", "name": core.manifest.models[model_id].name, "type": OBJECT_DETECTION,
        "annotation": name, "created": created, "updated": created, "public": False, "images": 0, "unannotated": 0,
        "splits": EMPTY_SPLITS, "versions": MAX_VERSIONS,
        # Roboflow counts annotations per class; a model has none, so the counts are 0 (in class-number order).
        "classes": dict.fromkeys(numbered, 0), "colors": {label: _hex(label) for label in numbered},
    }


def _version(project: dict[str, Any], number: int) -> dict[str, Any]:
    slug = project["id"].rsplit("/", 1)[1]
    return {
        "id": f"{project['id']}/{number}", "name": project["name"], "version": str(number),
        "created": project["created"], "images": 0, "splits": EMPTY_SPLITS, "augmentation": {},
        # No resize: the package would shrink the photo before sending it and scale the boxes back.
        "preprocessing": {}, "exports": [],
        "model": {"id": f"{slug}/{number}", "name": project["name"], "type": OBJECT_DETECTION},
    }


@auth.dialect(API_NAME)
async def api_key_check(request: web.Request) -> web.Response:
    """`POST <API_URL>/?api_key=…`: Roboflow(api_key=…) learns its workspace here."""
    return json_response({"welcome": "Perch answers the Roboflow API for the roboflow package.",
                          "workspace": WORKSPACE})


@auth.dialect(API_NAME)
async def api_workspace(request: web.Request) -> web.Response:
    workspace = request.match_info["workspace"]
    core = request.app[CORE]
    projects = [await _project(request, workspace, mid, strict=False) for mid in detection_model_ids(core)]
    return json_response({"workspace": {"name": workspace, "url": workspace, "members": [], "projects": projects}})


@auth.dialect(API_NAME)
async def api_project(request: web.Request) -> web.Response:
    workspace = request.match_info["workspace"]
    try:
        project = await _project(request, workspace, request.match_info["project"])
    except (UnknownModel, ModelUnavailable) as exc:
        status, message = failure(request, exc)
        return _api_error(message, status)
    return json_response({
        "workspace": {"name": workspace, "url": workspace, "members": []},
        "project": project,
        "versions": [_version(project, n) for n in range(1, MAX_VERSIONS + 1)],
    })


def add_routes(app: web.Application) -> None:
    auth.install(app)
    auth.register_refusal(NAME, _refusal)
    auth.register_refusal(API_NAME, _api_refusal)
    # Read-only; GET (and the key check's POST on the bare prefix) cannot meet the POST catch-all below.
    app.router.add_post(f"{API_PREFIX}/", api_key_check)
    app.router.add_post(API_PREFIX, api_key_check)
    app.router.add_get(f"{API_PREFIX}/{{workspace}}", api_workspace)
    app.router.add_get(f"{API_PREFIX}/{{workspace}}/{{project}}", api_project)
    # Registered last (see app.dialect_modules): this pattern would otherwise shadow two-segment routes.
    app.router.add_post(r"/{dataset}/{version:\d+}", infer)
