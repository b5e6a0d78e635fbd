"""The dashboard page. Its package (daemon/web) comes from another branch: this fragment counts once it exists,
and that branch adds its own routes (camera streams, snapshots, …) here as they are registered."""

from __future__ import annotations

from typing import Any

from ..parts import operation, routing_errors, string

REQUIRES = "perch.daemon.web"
ORDER = 5
TAG = "Dashboard"
TAGS = [{"name": TAG, "description": "The box's web page: hardware, models, cameras, try-it, log."}]

PATHS: dict[str, Any] = {
    "/": {"get": operation(
        "The dashboard (HTML)", TAG,
        {"200": {"description": "The page", "content": {"text/html": {"schema": string()}}}, **routing_errors()},
        open_route=True, fuzz=2)},
}
