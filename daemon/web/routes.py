"""Everything the dashboard adds to the main listener: page, history, camera views (and the history sampler)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..api.common import CORE
from . import camera_routes, pages
from .history import sampling


async def _history(app: web.Application) -> AsyncIterator[None]:
    core = app[CORE]
    async with sampling(core.history, core.registry):
        yield


def add_routes(app: web.Application) -> None:
    pages.add_routes(app)
    camera_routes.add_routes(app)
    app.cleanup_ctx.append(_history)
