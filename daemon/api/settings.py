"""Module settings, server log, update check and the (absent) training routes of seed 001.

Settings changed here are validated, applied to the running daemon at once (the routes read them per request) and
persisted in the state database, so they survive a restart. Nothing here ever calls the internet.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from ..logs import LOG_RING
from ..registry import ModelUnavailable
from ..store import RUNTIME_SETTINGS, StoreError, apply_settings
from ..version import VERSION, version_info
from . import codeproject, faces
from .common import CORE, ApiError, envelope, json_response, read_form

# CodeProject.AI module id -> settings section.
MODULES: dict[str, str] = {
    codeproject.MODULE_ID: "detection",
    faces.MODULE_ID: "faces",
}
# Names clients use for the same field (compared after lower-casing and '-' -> '_').
ALIASES: dict[str, str] = {
    "model_name": "model",
    "custom_model": "model",
    "confidence": "min_confidence",
    "minconfidence": "min_confidence",
}
TRAINING_MESSAGE = ("training is not available on this device; train elsewhere and import the model with"
                    " `perchd models import`")
MAX_LOG_ENTRIES = 1000


def _section(module_id: str) -> str:
    for known, section in MODULES.items():
        if known.lower() == module_id.lower():
            return section
    raise ApiError(f"unknown module {module_id!r}; settings exist for {', '.join(MODULES)}")


def _field(section: str, name: str | None) -> str:
    if not name:
        raise ApiError("name is required (the setting to change)")
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in RUNTIME_SETTINGS[section]:
        known = ", ".join(sorted(RUNTIME_SETTINGS[section]))
        raise ApiError(f"{name!r} is not a setting of this module; settings: {known}")
    return key


def _current(request: web.Request, section: str) -> dict[str, Any]:
    values = getattr(request.app[CORE].settings, section).model_dump()
    return {k: values[k] for k in sorted(RUNTIME_SETTINGS[section])}


async def get_settings(request: web.Request) -> web.Response:
    started = time.perf_counter()
    module_id = request.match_info["module_id"]
    section = _section(module_id)
    current = _current(request, section)
    env = {f"PERCHD__{section.upper()}__{k.upper()}": str(v) for k, v in current.items()}
    return json_response(envelope(request, started, moduleId=module_id, settings=current,
                                  environmentVariables=env))


async def set_setting(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    module_id = request.match_info["module_id"]
    section = _section(module_id)
    form = await read_form(request)
    field = _field(section, form.get("name"))
    value = form.get("value")
    if value is None:
        raise ApiError("value is required")
    value = value.strip()
    if section == "detection" and field == "model" and value != "auto":
        await core.rescan_custom_models()
        entry = core.manifest.models.get(value)
        if entry is None or entry.task != "detection":
            raise ApiError(f"{value!r} is not a detection model; see /v1/vision/custom/list")
        try:
            # Load before switching: requests keep being served by the old model until the new one is ready,
            # and requests already running finish on the model they started with.
            await core.registry.get(value)
        except ModelUnavailable as exc:
            raise ApiError(f"model {value} cannot be loaded: {exc}", status=500) from exc
    previous = getattr(core.settings, section)
    try:
        apply_settings(core.settings, section, {field: value})
    except StoreError as exc:
        raise ApiError(str(exc)) from exc
    try:
        await asyncio.to_thread(core.store.set_setting, section, field, value)
    except Exception:
        setattr(core.settings, section, previous)
        raise
    return json_response(envelope(request, started, moduleId=module_id,
                                  message=f"{field} set to {value}", settings=_current(request, section)))


async def log_list(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        count = int(request.query.get("count") or 20)
        last_id = int(request.query.get("last_id") or request.query.get("lastid") or 0)
    except ValueError as exc:
        raise ApiError("count and last_id must be whole numbers") from exc
    count = max(1, min(count, MAX_LOG_ENTRIES))
    entries = LOG_RING.entries(count, max(0, last_id))
    return json_response(envelope(request, started, entries=entries, count=len(entries)))


async def update_available(request: web.Request) -> web.Response:
    started = time.perf_counter()
    # Only the installed version is known: an appliance on a LAN never phones home to ask, unless the owner set
    # update.feed_url (then the image's release feed answers; daemon/api/update_status.py).
    from .update_status import update_available_fields

    info = version_info()
    image = await update_available_fields(request.app[CORE])
    message = f"You have the latest version known here ({VERSION})"
    if image.get("updateAvailable"):
        message = f"Perch {image['latest_image_version']} is available (installed: {image.get('image_version')})"
    fields = {"version": info, "current": info, "latest": info, "updateAvailable": False, **image}
    return json_response(envelope(request, started, message=message, **fields))


async def training(request: web.Request) -> web.Response:
    raise ApiError(TRAINING_MESSAGE, status=403)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/settings/{module_id}", get_settings)
    app.router.add_post("/v1/settings/{module_id}", set_setting)
    app.router.add_get("/v1/log/list", log_list)
    app.router.add_get("/v1/status/updateavailable", update_available)
    app.router.add_get("/v1/server/status/updateavailable", update_available)
    for method in ("GET", "POST"):
        app.router.add_route(method, "/v1/train/{action}", training)
