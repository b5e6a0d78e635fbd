"""The dashboard's page and files (no build step, no other host) and the history its charts draw."""

from __future__ import annotations

import mimetypes
import time
from pathlib import Path

from aiohttp import web

from ..api.common import CORE, envelope, json_response
from ..cameras.runtime import read_temperature
from .history import model_latency

STATIC = Path(__file__).resolve().parent / "static"
# Everything the page loads comes from this daemon; the browser is told so and refuses anything else.
CSP = ("default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; script-src 'self'; style-src 'self';"
       " object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}


def _files() -> dict[str, tuple[bytes, str]]:
    """The static files by name, read once: a fixed set, so no path from a request ever reaches the file system."""
    out: dict[str, tuple[bytes, str]] = {}
    for path in sorted(STATIC.iterdir()):
        if path.is_file():
            ctype = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            out[path.name] = (path.read_bytes(), ctype)
    return out


FILES = _files()
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP,
           "Referrer-Policy": "no-referrer"}


def _file(name: str) -> web.Response:
    found = FILES.get(name)
    if found is None:
        raise web.HTTPNotFound()
    body, ctype = found
    charset = "utf-8" if ctype.startswith("text/") or ctype.endswith("+xml") else None
    return web.Response(body=body, content_type=ctype, charset=charset, headers=HEADERS)


async def index(request: web.Request) -> web.Response:
    return _file("index.html")


async def static_file(request: web.Request) -> web.Response:
    return _file(request.match_info["name"])


async def history(request: web.Request) -> web.Response:
    """The chart data: closed 10-s buckets of the last 10 minutes, the open one, per-model latency, temperature."""
    started = time.perf_counter()
    core = request.app[CORE]
    return json_response(envelope(request, started, **core.history.snapshot(core.registry),
                                  models=model_latency(core.registry),
                                  temperatureC=read_temperature(core.settings.hardware_root)))


def add_routes(app: web.Application) -> None:
    if app[CORE].settings.web.dashboard:
        app.router.add_get("/", index)
        app.router.add_get("/ui/{name}", static_file)
    app.router.add_get("/v1/status/history", history)
