"""`GET /v1/status/update`: the image's update state (slots, last update and its result, release feed) in the
CodeProject.AI envelope, and the image fields that /v1/status/version and /updateavailable add."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..core import Core
from ..update.service import for_core
from .common import CORE, envelope, json_response


async def update_status(request: web.Request) -> web.Response:
    started = time.perf_counter()
    service = for_core(request.app[CORE])
    status = await service.status()
    last = status.get("last_update")
    if last is not None:
        message = f"last update: {last['summary']}"
    elif not status["rauc"]["available"]:
        message = status["rauc"]["error"]
    else:
        message = "no update recorded"
    return json_response(envelope(request, started, message=message, update=status))


def image_fields(core: Core) -> dict[str, Any]:
    """`image_version` for the version routes: present only on a Perch image (the release file exists)."""
    version = for_core(core).installed_version()
    return {"image_version": version} if version else {}


async def update_available_fields(core: Core) -> dict[str, Any]:
    """The release feed's answer for /v1/status/updateavailable; {} without a feed (then nothing is asked)."""
    service = for_core(core)
    out = image_fields(core)
    if not service.cfg.feed_url:
        return out
    latest = await service.check_feed()
    out["latest_image_version"] = latest.version if latest else None
    out["updateAvailable"] = service.update_available()
    if latest is not None and latest.notes_url:
        out["release_url"] = latest.notes_url
    if service.feed_error:
        out["feed_error"] = service.feed_error
    return out


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/status/update", update_status)
    app.router.add_get("/v1/server/status/update", update_status)
