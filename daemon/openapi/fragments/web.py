"""The dashboard (page, its files, chart history) and the camera picture routes, main listener only. Their package,
daemon/web, comes from the h/web branch: this fragment counts once that package exists."""

from __future__ import annotations

from typing import Any

from ..parts import (
    array,
    codeproject,
    dialect,
    envelope,
    integer,
    json_content,
    obj,
    operation,
    path_param,
    query,
    ref,
    routing_errors,
    string,
)

REQUIRES = "perch.daemon.web"
ORDER = 5
TAG = "Dashboard and cameras"
TAGS = [{"name": TAG, "description": "The box's web page, its chart data, and the cameras' pictures: live annotated "
                                     "MJPEG, the latest annotated frame, recent events with snapshots. Camera "
                                     "routes answer real statuses with {success: false, error, code}; with keys "
                                     "on they take a bearer token or ?api_key= (for <img> and players)."}]
MAIN = ["main"]
CAMERA = path_param("name", "A camera's name from the config")
PROBLEM = ref("PerchError")
CAMERA_ERRORS = {"401": "API keys are on and none was sent (WWW-Authenticate: Bearer)",
                 "402": "The account of the bearer token has no credits left"}


def _picture(summary: str, media: str, errors: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    ok = {"description": summary, "content": {media: {"schema": string()}}}
    return dialect(summary, TAG, ok, PROBLEM, {**CAMERA_ERRORS, **errors}, keys=("codeprojectKey",), **kwargs)


EVENT = obj({"id": string(), "camera": string(), "label": string(), "score": {"type": "number"},
             "snapshot": {"type": ["string", "null"], "description": "Where its picture is, if kept"}},
            ["id", "camera", "label"])
HISTORY = envelope({"models": {"type": "object"}, "temperatureC": {"type": ["number", "null"]}})

PATHS: dict[str, Any] = {
    "/": {"x-perch-listeners": MAIN, "get": operation(
        "The dashboard (HTML)", TAG,
        {"200": {"description": "The page", "content": {"text/html": {"schema": string()}}}, **routing_errors()},
        open_route=True, fuzz=2)},
    "/ui/{name}": {"x-perch-listeners": MAIN, "parameters": [path_param("name", "A file of the page")],
                   "get": operation(
        "The page's scripts and styles (a fixed set; anything else is 404)", TAG,
        {"200": {"description": "The file", "content": {t: {"schema": string()} for t in (
            "text/javascript", "text/css", "text/html", "image/svg+xml")}}, **routing_errors()},
        open_route=True, fuzz=4)},
    "/v1/status/history": {"x-perch-listeners": MAIN, "get": codeproject(
        "The charts' data: requests and latency of the last 10 minutes in 10-second buckets", TAG, HISTORY)},
    "/cameras/events": {"x-perch-listeners": MAIN, "get": dialect(
        "Recent objects of every camera (or one), newest first", TAG,
        {"description": "The events", "content": json_content(obj({
            "success": {"const": True}, "events": array(EVENT), "count": integer()}, ["success", "events"]))},
        PROBLEM, {**CAMERA_ERRORS, "400": "limit is not a whole number"}, keys=("codeprojectKey",),
        parameters=[query("camera", {"type": "string"}, "Only this camera"),
                    query("limit", {"type": "string", "pattern": "^[0-9]{1,4}$"}, "How many (1..50, default 20)")])},
    "/cameras/{name}/stream.mjpeg": {"x-perch-listeners": MAIN, "parameters": [CAMERA], "get": _picture(
        "Live annotated frames (multipart/x-mixed-replace, one JPEG per part) until the client leaves",
        "multipart/x-mixed-replace", {"503": "Too many viewers of this camera (Retry-After: 5)"},
        fuzz=0)},  # an endless body: not for the fuzzer
    "/cameras/{name}/snapshot.jpg": {"x-perch-listeners": MAIN, "parameters": [CAMERA], "get": _picture(
        "The latest annotated frame", "image/jpeg", {"503": "No frame yet (Retry-After: 2)"})},
    "/cameras/{name}/events/{event_id}.jpg": {
        "x-perch-listeners": MAIN, "parameters": [CAMERA, path_param("event_id", "An event's id")],
        "get": _picture("An event's snapshot (the last 50 events keep theirs)", "image/jpeg", {})},
}
