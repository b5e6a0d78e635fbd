"""What every dialect shares: app keys, form parsing with size limits, and dialect-aware error responses.

CodeProject semantics: processing errors are HTTP 200 with success:false, error and code (Blue Iris and the
CodeProject.AI clients read the body, not the status). DeepStack semantics: the same body with the real status.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from aiohttp import web
from aiohttp.hdrs import CONTENT_TYPE
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDict

from ..core import Core
from . import multipart

CODEPROJECT = "codeproject"
DEEPSTACK = "deepstack"

CORE: web.AppKey[Core] = web.AppKey("core", Core)
SEMANTICS: web.AppKey[str] = web.AppKey("semantics", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A client-facing failure: `status` is the real HTTP status (used as-is under DeepStack semantics)."""

    def __init__(self, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.extra = extra


@dataclass
class Form:
    """Query string and body fields merged (body wins), plus uploaded files in arrival order."""

    fields: MultiDict[str] = field(default_factory=MultiDict)
    files: list[tuple[str, str | None, bytes]] = field(default_factory=list)  # (field name, filename, data)

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.fields.get(name)
        return default if value is None or value == "" else value

    def file(self, *names: str) -> bytes | None:
        for name in names:
            for fname, _, data in self.files:
                if fname == name:
                    return data
        return None

    def require_file(self, *names: str) -> bytes:
        data = self.file(*names)
        if data is None:
            wanted = " or ".join(f"'{n}'" for n in names)
            raise ApiError(f"no image was sent: expected a file in the form field {wanted}")
        if not data:
            raise ApiError("the uploaded image is empty")
        return data


def max_upload_bytes(request: web.Request) -> int:
    return int(request.app[CORE].settings.limits.max_upload_mb * 1024 * 1024)


# Typed request storage where aiohttp has it (3.13+), a plain string key before.
_FORM: Any = web.RequestKey("perch_form", Form) if hasattr(web, "RequestKey") else "perch_form"


async def read_form(request: web.Request) -> Form:
    """Parse once per request: the auth middleware and the handler both ask, the body can be read only once."""
    cached = request.get(_FORM)
    if cached is not None:
        return cached
    form = await _parse_form(request)
    request[_FORM] = form
    return form


async def _parse_form(request: web.Request) -> Form:
    form = Form(fields=MultiDict(request.query))
    ctype = request.content_type
    limit = max_upload_bytes(request)
    if ctype.startswith("multipart/"):
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise ApiError(f"the upload exceeds {limit // (1024 * 1024)} MiB", status=413) from exc
        if len(body) > limit:
            raise ApiError(f"the upload exceeds {limit // (1024 * 1024)} MiB", status=413)
        try:
            boundary = parse_mimetype(request.headers.get(CONTENT_TYPE, "")).parameters.get("boundary")
            parts = multipart.simple_parts(body, boundary) if boundary else None
            if parts is None:
                parts = [p async for p in multipart.general_parts(request.headers, body)]
            for name, filename, data in parts:
                if filename is not None:
                    form.files.append((name, filename, data))
                else:
                    form.fields[name] = data.decode("utf-8", "replace")
        except (ValueError, AssertionError, UnicodeError, HttpProcessingError) as exc:
            # HttpProcessingError: aiohttp's part-header parser (InvalidHeader for a part without headers, …).
            detail = exc.message if isinstance(exc, HttpProcessingError) else exc
            raise ApiError(f"malformed multipart body: {str(detail).strip() or type(exc).__name__}") from exc
    elif ctype == "application/x-www-form-urlencoded":
        try:
            post = await request.post()
        except web.HTTPRequestEntityTooLarge as exc:
            raise ApiError(f"the upload exceeds {limit // (1024 * 1024)} MiB", status=413) from exc
        except (UnicodeDecodeError, LookupError) as exc:  # bytes that are not text in the (named) charset
            raise ApiError(f"the form is not readable text: {exc}") from exc
        for key, value in post.items():
            if isinstance(value, str):
                form.fields[key] = value
    return form


def parse_number(raw: str | None, default: float, name: str, low: float = 0.0, high: float = 1.0) -> float:
    """A number in low..high; NaN, text and out-of-range values are refused rather than silently clamped."""
    if raw is None:
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise ApiError(f"{name} must be a number between {low:g} and {high:g}, got {raw!r}") from exc
    if math.isnan(value) or not low <= value <= high:
        raise ApiError(f"{name} must be a number between {low:g} and {high:g}, got {raw!r}")
    return value


def parse_fraction(raw: str | None, default: float, name: str = "min_confidence") -> float:
    return parse_number(raw, default, name)


def parse_bool(raw: str | None, name: str, default: bool = False) -> bool:
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ApiError(f"{name} must be true or false, got {raw!r}")


def json_response(payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Encoded once into a body, so aiohttp sends Content-Length: Blue Iris breaks on chunked responses.
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def envelope(request: web.Request, started: float, **payload: Any) -> dict[str, Any]:
    """The fields every CodeProject.AI response carries, around a route's own payload."""
    core = request.app[CORE]
    elapsed = round((time.perf_counter() - started) * 1000)
    out: dict[str, Any] = {"success": True}
    out.update(payload)
    out.setdefault("processMs", elapsed)
    out.setdefault("inferenceMs", 0)
    out.update({
        "analysisRoundTripMs": elapsed,
        "requestId": str(uuid.uuid4()),
        "processedBy": core.hostname,
        "timestampUTC": formatdate(usegmt=True),
    })
    out.setdefault("code", 200)
    return out


@dataclass(frozen=True)
class Module:
    """A CodeProject.AI module as its clients see it."""

    id: str
    name: str


def task_fields(module: Module, command: str, device: str | None = None, *, inference_ms: float | None = None,
                process_ms: float | None = None, provider: str | None = None, gpu: bool = False) -> dict[str, Any]:
    """Timing, module and device of a task result, in the order CodeProject.AI clients have always seen them.
    Timings left out are filled in by `envelope` (request time, no inference)."""
    out: dict[str, Any] = {}
    if inference_ms is not None:
        out["inferenceMs"] = round(inference_ms)
    if process_ms is not None:
        out["processMs"] = round(process_ms)
    out.update(moduleId=module.id, moduleName=module.name, command=command)
    if device is not None:
        out.update(inferenceDevice=device, executionProvider=provider or device, canUseGPU=gpu)
    return out


def task_response(request: web.Request, started: float, module: Module, command: str, device: str | None = None,
                  /, *, inference_ms: float | None = None, process_ms: float | None = None,
                  provider: str | None = None, gpu: bool = False, **payload: Any) -> web.Response:
    """A task result in the CodeProject.AI envelope: the route's own fields first, then `task_fields`."""
    return json_response(envelope(request, started, **payload, **task_fields(
        module, command, device, inference_ms=inference_ms, process_ms=process_ms, provider=provider, gpu=gpu)))


def error_response(request: web.Request, message: str, status: int = 400, **extra: Any) -> web.Response:
    payload: dict[str, Any] = {"success": False, "error": message, **extra}
    headers = {"Retry-After": "1"} if status == 503 else None
    if request.app.get(SEMANTICS) == CODEPROJECT and status not in (404, 405):
        payload["code"] = status
        return json_response(payload, 200, headers)
    return json_response(payload, status, headers)
