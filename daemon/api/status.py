"""Status routes: ping, version, system status (hardware + models + queues), module list."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..version import VERSION, version_info
from .codeproject import MODULE_ID, MODULE_NAME
from .common import CORE, json_response


async def ping(request: web.Request) -> web.Response:
    return json_response({"success": True})


async def version(request: web.Request) -> web.Response:
    from .update_status import image_fields

    return json_response({"success": True, "version": version_info(), "message": VERSION,
                          **image_fields(request.app[CORE])})


async def system_status(request: web.Request) -> web.Response:
    return json_response({"success": True, **request.app[CORE].system_status()})


def _module(module_id: str, name: str, model: dict[str, Any] | None, reason: str | None) -> dict[str, Any]:
    ok = model is not None and model.get("available", True)
    return {
        "moduleId": module_id,
        "name": name,
        "version": VERSION,
        "status": "Started" if ok else "NotAvailable",
        "inferenceDevice": model.get("inferenceDevice") if ok and model else None,
        "model": model.get("id") if model else None,
        "reason": None if ok else reason,
        "processedCount": model.get("processed", 0) if ok and model else 0,
        "averageInferenceMs": model.get("averageInferenceMs") if ok and model else None,
    }


async def module_list_status(request: web.Request) -> web.Response:
    core = request.app[CORE]
    default_id = core.registry.default_model_id()
    models = {m["id"]: m for m in core.registry.status()}
    model = models.get(default_id)
    reason = core.registry.unavailable.get(default_id, "not loaded yet")
    statuses = [_module(MODULE_ID, MODULE_NAME, model, reason)]
    return json_response({"success": True, "statuses": statuses, "hardware": core.hardware.to_dict()})


def add_routes(app: web.Application) -> None:
    for path in ("/v1/status/ping", "/v1/server/status/ping"):
        app.router.add_get(path, ping)
        app.router.add_post(path, ping)
    app.router.add_get("/v1/status/version", version)
    app.router.add_get("/v1/server/status/version", version)
    app.router.add_get("/v1/status/system-status", system_status)
    app.router.add_get("/v1/module/list/status", module_list_status)
