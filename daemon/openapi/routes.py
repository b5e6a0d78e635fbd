"""GET /openapi.json and GET /docs on both listeners; neither ever needs a key (see auth.OPEN_PATHS)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from aiohttp import web

from .spec import spec_bytes

SPEC_PATH = "/openapi.json"
DOCS_PATH = "/docs"


@cache
def _docs_page() -> bytes:
    # The page renders /openapi.json in the browser itself: no CDN, nothing fetched from another host.
    return files(__package__).joinpath("docs.html").read_bytes()


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=spec_bytes(), content_type="application/json")


async def docs(request: web.Request) -> web.Response:
    return web.Response(body=_docs_page(), content_type="text/html", charset="utf-8")


def add_routes(app: web.Application) -> None:
    app.router.add_get(SPEC_PATH, openapi_json)
    app.router.add_get(DOCS_PATH, docs)
