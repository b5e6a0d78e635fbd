"""Ultralytics HUB inference dialect: POST /v1/predict/{model_id}."""

from __future__ import annotations

from typing import Any

from ..parts import (
                                     array,
                                     binary,
                                     dialect,
                                     form_body,
                                     form_text,
                                     integer,
                                     json_content,
                                     number,
                                     obj,
                                     path_param,
                                     ref,
                                     string,
)

ORDER = 60
TAG = "Ultralytics HUB"
TAGS = [{"name": TAG, "description": "Scripts written for Ultralytics HUB's inference API, pointed at the box. "
                                     "Real HTTP statuses; errors are {success: false, message}."}]

BOX = obj({"x1": number(), "y1": number(), "x2": number(), "y2": number()}, ["x1", "y1", "x2", "y2"])
SCHEMAS = {
    "UltralyticsError": obj({"success": {"const": False}, "message": string()}, ["success", "message"]),
    "UltralyticsResult": obj({
        "success": {"const": True}, "message": string(),
        "data": array(obj({"name": string(), "class": integer("COCO-80 class number (-1: not a COCO class)"),
                           "confidence": number(), "box": BOX}, ["name", "class", "confidence", "box"]),
                      "Boxes in pixels, or 0..1 fractions of the width/height with normalize=true"),
    }, ["success", "message", "data"]),
}
STATUSES = {
    "400": "A bad argument, no image, or an image address that cannot be fetched",
    "401": "API keys are on and x-api-key (or a bearer token) is missing or wrong",
    "402": "The account of the bearer token has no credits left",
    "403": "The image address is refused (fetch.enabled is off or the host is not allowed)",
    "413": "The upload exceeds limits.max_upload_mb",
    "500": "The model cannot be loaded or inference failed",
    "503": "The model's queue is full (retry later)",
    "504": "The request waited longer than queue.timeout_s",
}

PATHS: dict[str, Any] = {
    "/v1/predict/{model_id}": {
        "parameters": [path_param("model_id", "`default` or a detection model id (e.g. ssd_mobilenet_v1)")],
        "post": dialect(
            "Objects in a photo, in Ultralytics HUB's shape", TAG,
            {"description": "Inference complete", "content": json_content(ref("UltralyticsResult"))},
            ref("UltralyticsError"), STATUSES, keys=("ultralyticsKey",),
            body=form_body({
                "image": binary("The photo"),
                "url": form_text("An image address to fetch instead (needs fetch.enabled)"),
                "size": form_text("32..1280 (checked; each model runs at its own input size)",
                                  pattern="^[0-9]{1,5}$"),
                "confidence": form_text("0.01..1 (default 0.25)"),
                "iou": form_text("NMS overlap 0..0.95 (default 0.45)"),
                "normalize": form_text("true: boxes as 0..1 fractions"),
            }),
        ),
    },
}
