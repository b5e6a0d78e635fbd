"""CodeProject.AI / DeepStack face routes: detect, register, recognize, match, list, delete."""

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
    form_text,
    fraction,
    integer,
    number,
    obj,
    string,
)

ORDER = 20
TAG = "Faces (CodeProject.AI / DeepStack)"
TAGS = [{"name": TAG, "description": "YuNet finds faces, dlib describes them; registered faces live in SQLite "
                                     "under state_dir. Same error semantics as the vision routes."}]

IMAGE = binary("The photo")
USERID = form_text("Who the face belongs to (1..100 characters)")
FACE = obj({"label": {"const": "face"}, "confidence": number(), **BOX}, ["label", "confidence", *BOX_REQUIRED])
RECOGNIZED = obj({"userid": string('A registered userid, or "unknown" (confidence 0)'), "label": string(),
                  "confidence": number(), **BOX}, ["userid", "confidence", *BOX_REQUIRED])


def _found(item: dict[str, Any]) -> dict[str, Any]:
    return envelope({"predictions": array(item), "count": integer(), "message": string()},
                    ["predictions", "count"])


def _detect() -> dict[str, Any]:
    return {"post": codeproject(
        "Faces in a photo: boxes and confidence", TAG, _found(FACE),
        body=form_body({"image": IMAGE, "min_confidence": fraction("Lowest face confidence", 0.67)}, ["image"]))}


REGISTER_BODY = form_body(
    {"userid": USERID, "image": binary("A photo of the person; send 1..64 photos under any field names")},
    ["userid"], description="The person's id and one or more photos (descriptors are averaged)")

PATHS: dict[str, Any] = {
    "/v1/vision/face": _detect(),
    "/v1/vision/face/": _detect(),
    "/v1/vision/face/register": {"post": codeproject(
        "Register (or update) a person from one or more photos", TAG,
        envelope({"userid": string(), "faces": integer("Photos a face was found in"), "message": string(),
                  "Message": string()}, ["userid", "message"]), body=REGISTER_BODY, fuzz=8)},
    "/v1/vision/face/recognize": {"post": codeproject(
        "Who is in the photo", TAG, _found(RECOGNIZED),
        body=form_body({"image": IMAGE, "min_confidence": fraction("Lowest face confidence", 0.67)}, ["image"]))},
    "/v1/vision/face/match": {"post": codeproject(
        "How alike the faces in two photos are", TAG,
        envelope({"similarity": number("0..1; the same person scores above 0.5", minimum=0, maximum=1)},
                 ["similarity"]),
        body=form_body({"image1": IMAGE, "image2": IMAGE}, ["image1", "image2"]))},
    "/v1/vision/face/list": {
        "get": codeproject("Registered userids", TAG, envelope({"faces": array(string()), "count": integer()},
                                                               ["faces", "count"])),
        "post": codeproject("Registered userids", TAG, envelope({"faces": array(string()), "count": integer()},
                                                                ["faces", "count"])),
    },
    "/v1/vision/face/delete": {"post": codeproject(
        "Forget a registered person", TAG, envelope({"message": string()}, ["message"]),
        body=form_body({"userid": USERID}, ["userid"]))},
}
