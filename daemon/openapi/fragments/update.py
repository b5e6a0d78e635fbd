"""Update status (RAUC A/B slots, the last update's outcome). Its package, daemon/update, comes from the h/upd
branch: this fragment counts once that package exists."""

from __future__ import annotations

from typing import Any

from ..parts import codeproject, envelope

REQUIRES = "perch.daemon.update"
ORDER = 55
TAG = "Status and settings"  # described in status.py's TAGS

UPDATE = envelope({"update": {"type": "object", "description": "RAUC availability, slots, the last update"}},
                  ["update"])

PATHS: dict[str, Any] = {
    "/v1/status/update": {"get": codeproject("The appliance's update state: slots and the last update", TAG,
                                             UPDATE)},
    "/v1/server/status/update": {"get": codeproject("Same as /v1/status/update", TAG, UPDATE)},
}
