"""CodeProject.AI / DeepStack vision routes: objects, custom models, scene, licence plates."""

from __future__ import annotations

from typing import Any

from ..parts import (
    BOX,
    BOX_REQUIRED,
    array,
    binary,
    codeproject,
    envelope,
    form_body,
    fraction,
    integer,
    number,
    obj,
    path_param,
    string,
)

ORDER = 10
TAG = "Vision (CodeProject.AI / DeepStack)"
TAGS = [{"name": TAG, "description": "The routes Blue Iris, Frigate's deepstack detector, Agent DVR and Home "
                                     "Assistant call. Main port: CodeProject semantics (errors are HTTP 200 with "
                                     "success:false and `code`); legacy port: DeepStack semantics (real statuses)."}]

PREDICTION = obj({"label": string(), "confidence": number(minimum=0, maximum=1), **BOX}, ["label", "confidence",
                                                                                        *BOX_REQUIRED])
SCHEMAS = {
    "Prediction": PREDICTION,
    "Detections": envelope({"predictions": array({"$ref": "#/components/schemas/Prediction"},
                                                 "Sorted by confidence, highest first; boxes in pixels of the "
                                                 "uploaded image"),
                            "count": integer(), "message": string()}, ["predictions", "count", "message"]),
}
IMAGE = binary("The photo (JPEG, PNG, BMP, GIF, WebP)")
DETECT_BODY = form_body({"image": IMAGE, "min_confidence": fraction("Lowest confidence reported", 0.4)}, ["image"])


def _detect(summary: str, description: str = "") -> dict[str, Any]:
    return codeproject(summary, TAG, {"$ref": "#/components/schemas/Detections"}, description=description,
                       body=DETECT_BODY)


CUSTOM_LIST = envelope({"models": array(string()), "count": integer(),
                        "problems": {"type": "object", "additionalProperties": string(),
                                     "description": "Files in the custom-model folder that could not be used"}},
                       ["models", "count"])
SCENE = envelope({"label": string("ImageNet class of the whole picture"), "confidence": number()},
                 ["label", "confidence"])
PLATES = envelope({"predictions": array(obj({"label": string('"Plate: XYZ"'), "plate": string(),
                                             "confidence": number(), **BOX}, ["label", "plate", "confidence"])),
                   "count": integer()}, ["predictions", "count"])
ALPR_BODY = form_body({"upload": binary("The photo (CodeProject.AI's field name)"),
                       "image": binary("The photo (used when `upload` is absent)"),
                       "min_confidence": fraction("Lowest plate confidence reported", 0.0)})


def _alpr() -> dict[str, Any]:
    return {"post": codeproject("Licence plates: text, confidence and box", TAG, PLATES, body=ALPR_BODY)}


PATHS: dict[str, Any] = {
    "/v1/vision/detection": {"post": _detect("Objects in a photo (the default detection model)")},
    "/v1/vision/custom/list": {
        "get": codeproject("Detection models this box serves (manifest and custom)", TAG, CUSTOM_LIST),
        "post": codeproject("Detection models this box serves (manifest and custom)", TAG, CUSTOM_LIST),
    },
    "/v1/vision/custom/{model}": {
        "parameters": [path_param("model", "A detection model id from /v1/vision/custom/list")],
        "post": _detect("Objects from one named detection model",
                        "Custom models dropped into custom_model_dir are found without a restart."),
    },
    "/v1/vision/scene": {"post": codeproject("Scene: one label for the whole photo", TAG, SCENE,
                                             body=form_body({"image": IMAGE}, ["image"]))},
    "/v1/vision/alpr": _alpr(),
    "/v1/image/alpr": _alpr(),
}
