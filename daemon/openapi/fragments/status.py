"""Status, version, module list, server log, update check, settings and the (refused) training routes."""

from __future__ import annotations

from typing import Any

from ..parts import (
    array,
    boolean,
    codeproject,
    envelope,
    form_body,
    form_text,
    integer,
    number,
    obj,
    operation,
    path_param,
    query,
    ref,
    routing_errors,
    string,
)

ORDER = 50
TAG = "Status and settings"
TAGS = [{"name": TAG, "description": "Liveness, version, hardware and models, the server log, module settings "
                                     "(applied at once, kept across restarts). CodeProject.AI semantics."}]

PING = obj({"success": {"const": True}}, ["success"])
VERSION = obj({"major": integer(), "minor": integer(), "patch": integer(), "preRelease": {"type": ["string", "null"]},
               "securityUpdate": boolean(), "build": integer(), "file": string(), "releaseNotes": string()},
              ["major", "minor", "patch"])
SCHEMAS = {"Version": VERSION}


def _ping() -> dict[str, Any]:
    op = operation("Liveness: answers once the daemon serves", TAG, {
        "200": {"description": "Alive", "content": {"application/json": {"schema": PING}}}, **routing_errors()},
        open_route=True)
    return {"get": op, "post": op}


def _version() -> dict[str, Any]:
    ok = obj({"success": {"const": True}, "version": ref("Version"), "message": string()},
             ["success", "version", "message"])
    return {"get": codeproject("The daemon's version", TAG, ok)}


MODEL = obj({"id": string(), "available": boolean(), "reason": string(), "inferenceDevice": string(),
             "accelerator": string(), "queueDepth": integer(), "averageInferenceMs": {"type": ["number", "null"]}},
            ["id"])
SYSTEM = obj({"success": {"const": True}, "hostname": string(), "uptimeSeconds": number(),
              "accelerator": string("auto or the configured accelerator"),
              "hardware": obj({"board": {"type": "object"}, "accelerators": array({"type": "object"})}, []),
              "models": array(MODEL), "queueDepth": integer(),
              "cameras": {"type": "object", "description": "Per camera: state, fps, detection rate"},
              "mqtt": {"type": ["object", "null"]}},
             ["success", "hostname", "hardware", "models", "queueDepth"])
MODULES = obj({"success": {"const": True}, "hardware": {"type": "object"}, "statuses": array(obj({
    "moduleId": string(), "name": string(), "status": {"enum": ["Started", "NotAvailable"]},
    "inferenceDevice": {"type": ["string", "null"]}, "reason": {"type": ["string", "null"]}},
    ["moduleId", "status"]))}, ["success", "statuses"])
LOG = envelope({"entries": array(obj({"id": integer(), "timestamp": string(), "entry": string()},
                                     ["id", "timestamp", "entry"])), "count": integer()}, ["entries", "count"])
UPDATE = envelope({"updateAvailable": boolean(), "version": ref("Version"), "current": ref("Version"),
                   "latest": ref("Version")}, ["updateAvailable", "current", "latest"])
SETTINGS = envelope({"moduleId": string(), "settings": {"type": "object"},
                     "environmentVariables": {"type": "object", "additionalProperties": string()}},
                    ["moduleId", "settings"])
MODULE_ID = path_param("module_id", "ObjectDetectionPerch (detection: model, min_confidence) or FaceProcessing "
                       "(faces: min_confidence); any case")
WHOLE = {"type": "string", "pattern": "^[0-9]{1,9}$"}

PATHS: dict[str, Any] = {
    "/v1/status/ping": _ping(),
    "/v1/server/status/ping": _ping(),
    "/v1/status/version": _version(),
    "/v1/server/status/version": _version(),
    "/v1/status/system-status": {"get": codeproject(
        "Hardware report, loaded models with their accelerator, queue depth, cameras and MQTT", TAG, SYSTEM)},
    "/v1/module/list/status": {"get": codeproject("CodeProject.AI module status", TAG, MODULES)},
    "/v1/status/updateavailable": {"get": codeproject(
        "The installed version; the box never asks the internet", TAG, UPDATE)},
    "/v1/server/status/updateavailable": {"get": codeproject("Same as /v1/status/updateavailable", TAG, UPDATE)},
    "/v1/log/list": {"get": codeproject("Recent server log lines", TAG, LOG, parameters=[
        query("count", WHOLE, "How many (1..1000, default 20)"),
        query("last_id", WHOLE, "Only entries after this id (poll with the last id seen)"),
        query("lastid", WHOLE, "Same as last_id")])},
    "/v1/settings/{module_id}": {
        "parameters": [MODULE_ID],
        "get": codeproject("Read a module's run-time settings", TAG, SETTINGS),
        "post": codeproject(
            "Change one setting: applied at once, kept in the state database", TAG, SETTINGS,
            description="`model` takes a detection model id or `auto`; the new model loads before it takes over, "
                        "so no request is dropped. `min_confidence` takes 0..1.",
            body=form_body({"name": form_text("The setting: model, min_confidence (aliases: model_name, "
                                              "custom_model, confidence)"),
                            "value": form_text("Its new value")}, ["name", "value"]), fuzz=12),
    },
    "/v1/train/{action}": {
        "parameters": [path_param("action", "Any training action of CodeProject.AI")],
        "get": codeproject("Training is not available on this device (always 403)", TAG, None),
        "post": codeproject("Training is not available on this device (always 403)", TAG, None),
    },
}
