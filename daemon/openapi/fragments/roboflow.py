"""Roboflow hosted inference (POST /{dataset}/{version}) and the read-only slice of Roboflow's management API
under /roboflow that the `roboflow` Python package reads before it predicts."""

from __future__ import annotations

from typing import Any

from ..parts import (
    MULTIPART,
    URLENCODED,
    array,
    binary,
    dialect,
    integer,
    json_content,
    number,
    obj,
    path_param,
    query,
    ref,
    string,
)

ORDER = 70
TAG = "Roboflow"
TAGS = [{"name": TAG, "description": "Roboflow's hosted object-detection API and inference-sdk (api_v0), and the "
                                     "management calls of the `roboflow` package (API_URL=http://BOX:32168/roboflow)."
                                     " Real HTTP statuses; errors are {message}, a refused key is 403 {Message}."}]

SCHEMAS = {
    "RoboflowError": obj({"message": string()}, ["message"]),
    "RoboflowRefusal": obj({"Message": {"const": "User is not authorized to access this resource"}}, ["Message"]),
    "RoboflowResult": obj({
        "time": number("Seconds"),
        "image": obj({"width": integer(), "height": integer()}, ["width", "height"]),
        "predictions": array(obj({
            "x": number("Box centre, pixels"), "y": number("Box centre, pixels"), "width": number(),
            "height": number(), "confidence": number(), "class": string(), "class_id": integer(),
            "detection_id": string()}, ["x", "y", "width", "height", "confidence", "class"])),
        "visualization": string("format=image_and_json: the annotated JPEG, base64", contentEncoding="base64"),
    }, ["time", "image", "predictions"]),
    "RoboflowApiError": obj({"error": obj({"message": string(), "status": integer()}, ["message"])}, ["error"]),
}
STATUSES = {
    "400": "A bad argument, no image, a body that is not base64, or an image address that cannot be fetched",
    "402": "The account of the bearer token has no credits left",
    "413": "The upload exceeds limits.max_upload_mb",
    "500": "The model cannot be loaded or inference failed",
    "503": "The model's queue is full (retry later)",
    "504": "The request waited longer than queue.timeout_s",
}
REFUSED = {"403": {"description": "API keys are on and api_key is missing or wrong (also: fetching by address is "
                                  "off)", "content": json_content({"anyOf": [ref("RoboflowRefusal"),
                                                                             ref("RoboflowError")]})}}
BASE64 = {"type": "string", "description": "The image, base64 (a data: URL, line breaks and URL-encoding are "
                                           "tolerated)", "contentEncoding": "base64"}
BODY = {"required": False, "description": "The image: base64 in the body (as the docs' curl sends it), a multipart "
                                          "`file`, or none with ?image=<address>",
        "content": {URLENCODED: {"schema": BASE64}, "text/plain": {"schema": BASE64},
                    MULTIPART: {"schema": obj({"file": binary("The photo")}, [])}}}
PERCENT = {"type": "number", "minimum": 0, "maximum": 100}
INFER_QUERY = [
    query("api_key", {"type": "string"}, "Your key (when keys are on)"),
    query("confidence", PERCENT, "Lowest confidence, 0..100 (default 40); values up to 1 are fractions"),
    query("overlap", PERCENT, "NMS overlap, 0..100 (default 30); values up to 1 are fractions"),
    query("classes", {"type": "string"}, "Only these classes, comma-separated"),
    query("format", {"enum": ["json", "image", "image_and_json"]}, "json (default), image: the annotated JPEG, "
          "image_and_json: JSON plus `visualization`"),
    query("stroke", {"type": "integer", "minimum": 1, "maximum": 100}, "Box line width in pixels (1..100)"),
    query("labels", {"type": "boolean"}, "Write the labels on the boxes"),
    query("image", {"type": "string"}, "An image address to fetch instead of a body (needs fetch.enabled)"),
]
API_STATUSES = {"401": "API keys are on and api_key is missing or wrong", "500": "A model's labels cannot be read"}
API_ERROR = ref("RoboflowApiError")
WORKSPACE = path_param("workspace", "Any name; the answer calls the workspace by it")


def _api(summary: str, ok: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return dialect(summary, TAG, {"description": "OK", "content": json_content(ok)}, API_ERROR, API_STATUSES,
                   keys=("roboflowKey",), **kwargs)


KEY_CHECK = obj({"welcome": string(), "workspace": string()}, ["workspace"])


def _key_check() -> dict[str, Any]:
    return {"post": _api("The key check: names the workspace", KEY_CHECK)}


PATHS: dict[str, Any] = {
    "/{dataset}/{version}": {
        "parameters": [path_param("dataset", "`default` or a detection model id"),
                       path_param("version", "Any positive integer (each model has one version)",
                                  {"type": "integer", "minimum": 1})],
        "post": dialect(
            "Objects in a photo, in Roboflow's hosted-API shape", TAG,
            {"description": "Detections (x, y = box centre), or the annotated JPEG with format=image",
             "content": {**json_content(ref("RoboflowResult")), "image/jpeg": {"schema": binary("Annotated")}}},
            ref("RoboflowError"), STATUSES, keys=("roboflowKey",), parameters=INFER_QUERY, body=BODY,
            error_overrides=REFUSED),
    },
    "/roboflow": _key_check(),
    "/roboflow/": _key_check(),
    "/roboflow/{workspace}": {"parameters": [WORKSPACE], "get": _api(
        "The workspace: one project per detection model",
        obj({"workspace": obj({"name": string(), "url": string(), "projects": array({"type": "object"})},
                              ["name", "projects"])}, ["workspace"]))},
    "/roboflow/{workspace}/{project}": {
        "parameters": [WORKSPACE, path_param("project", "`default` or a detection model id")],
        "get": _api("A project (detection model) and its versions 1..100",
                    obj({"workspace": {"type": "object"}, "project": obj({"id": string(), "classes": {
                        "type": "object"}}, ["id"]), "versions": array({"type": "object"})},
                        ["project", "versions"]))},
}
