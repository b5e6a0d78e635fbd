"""Roboflow hosted-inference dialect (seed 003): `POST /<dataset>/<version>`.

`<dataset>` is any detection model id of the manifest or `default`; `<version>` any positive integer (ignored).
The image is the request body in base64 (sent as application/x-www-form-urlencoded by the docs' curl, axios,
Kotlin…; `data:` URLs, line breaks and URL-encoding are tolerated), a multipart `file`, or `?image=<url>`.
Query: api_key, confidence and overlap (0..100, defaults 40 and 30; values up to 1 are read as fractions, which is
what Roboflow's inference-sdk sends), classes (comma list), format=json|image|image_and_json, stroke, labels, name.
Answer: {time, image: {width, height}, predictions: [{x, y, width, height, confidence, class, class_id,
detection_id}]} with x, y the box centre in pixels; format=image answers an annotated JPEG, image_and_json adds it
in base64 as `visualization`. A bad key is 403 {"Message": "User is not authorized to access this resource"}.
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
from .dialects import class_numbers, decode, detect_bytes, detect_frame, failure, fetch, get_model

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


def add_routes(app: web.Application) -> None:
    auth.install(app)
    auth.register_refusal(NAME, _refusal)
    # Registered last (see app.dialect_modules): this pattern would otherwise shadow two-segment routes.
    app.router.add_post(r"/{dataset}/{version:\d+}", infer)
