"""RAYPACK dialect: POST /recog and /getmodels."""

from __future__ import annotations

from typing import Any

from ..parts import array, binary, boolean, dialect, form_body, form_text, json_content, obj, ref, string

ORDER = 80
TAG = "RAYPACK"
TAGS = [{"name": TAG, "description": "RAYPACK's recognition API: models 1 objects, 2 food, 3 registered faces "
                                     "(\"celebrity\"), 4 face AI (pixels; anonymised images), 41 face v4 "
                                     "(normalised); 5 and 6 are not installed. Errors: the RAYPACK container with "
                                     "`error` and `code`, and that HTTP status."}]

CONTAINER = {"name": {"const": "Raypack_AI_Filecontainer"}, "version": string(), "license": string()}
SCHEMAS = {
    "RaypackError": obj({**CONTAINER, "error": string(), "code": {"type": "integer"}},
                        ["name", "version", "error", "code"]),
    "RaypackResult": obj({**CONTAINER, "results": obj({
        "stats": obj({"modelname": string(), "modelid": string(), "originalfile": string()}, ["modelid"]),
        "tags": array({"type": "object"}, "Models 1, 2 (name, value as a string with 8 decimals) and 3"),
        "totalfaces": {"type": "integer"}, "faces": array({"type": "object"}, "Models 4 and 41"),
        "image": string("mode=jsonimage: the anonymised JPEG, base64", contentEncoding="base64"),
    }, ["stats"])}, ["name", "version", "results"]),
}
STATUSES = {
    "400": "A bad argument, no image, or an image address that cannot be fetched",
    "401": "API keys are on and apikey (or a bearer token) is missing or wrong",
    "402": "The account of the bearer token has no credits left",
    "403": "Fetching by address is off or the host is not allowed",
    "413": "The upload exceeds limits.max_upload_mb",
    "500": "The model cannot be loaded or inference failed",
    "503": "The model's queue is full (retry later)",
    "504": "The request waited longer than queue.timeout_s",
}
GETMODELS_OK = obj({**CONTAINER, "results": obj({"models": array(obj({
    "modelid": string(), "modelname": string(), "description": string(), "installed": boolean()},
    ["modelid", "modelname", "installed"]))}, ["models"])}, ["results"])


def _getmodels() -> dict[str, Any]:
    return dialect("The RAYPACK models and whether each is installed", TAG,
                   {"description": "The models", "content": json_content(GETMODELS_OK)}, ref("RaypackError"),
                   {"401": STATUSES["401"]}, keys=("raypackKey",),
                   body=form_body({"apikey": form_text("Your key (when keys are on)")}))


PATHS: dict[str, Any] = {
    "/recog": {"post": dialect(
        "Recognise objects, food, registered people or faces", TAG,
        {"description": "The RAYPACK container with results, or the anonymised JPEG with mode=image",
         "content": {**json_content(ref("RaypackResult")), "image/jpeg": {"schema": binary("Anonymised")}}},
        ref("RaypackError"), STATUSES, keys=("raypackKey",),
        body=form_body({
            "file": binary("The photo (upload it: -F file=@photo.jpg)"),
            "url": form_text("An image address to fetch instead (needs fetch.enabled)"),
            "apikey": form_text("Your key (when keys are on)"),
            "model": form_text("1, 2, 3, 4, 41 (5, 6: not installed); default 1, or 4 with face options"),
            "threshold": form_text("Lowest confidence 0..1"),
            "lang": form_text("en (default) or de: German COCO labels"),
            "mode": {"enum": ["json", "image", "jsonimage"], "description": "Model 4: json, image or jsonimage"},
            "facemode": {"enum": ["default", "pixel", "fill", "black"], "description": "How faces are marked"},
            "hex": form_text("Colour for boxes and fill, e.g. #FF0000"),
            "facefinder": {"enum": ["1", "2", "3"], "description": "Accepted; faces are found at one scale"},
        }), fuzz=15)},
    "/getmodels": {"get": _getmodels(), "post": _getmodels()},
}
