"""CodeProject.AI image-processing routes: background removal, portrait blur, super-resolution, cartoon."""

from __future__ import annotations

from typing import Any

from ..parts import binary, boolean, codeproject, envelope, form_body, form_text, fraction, integer, string

ORDER = 30
TAG = "Image processing (CodeProject.AI)"
TAGS = [{"name": TAG, "description": "Results come back as base64 images in the JSON answer."}]

IMAGE = binary("The photo")
PICTURE = {"mimeType": string(), "width": integer(), "height": integer()}


def _result(field: str, **extra: dict[str, Any]) -> dict[str, Any]:
    return envelope({field: string("The resulting image, base64", contentEncoding="base64"), **PICTURE, **extra},
                    [field, "mimeType", "width", "height"])


def _cartoon() -> dict[str, Any]:
    return {"post": codeproject(
        "A cartoon of the photo (White-box cartoon GAN; weights non-commercial)", TAG,
        _result("imageBase64", model=string("The model that drew it")),
        body=form_body({"image": IMAGE, "model": form_text("whitebox (default) or whitebox_int8")}, ["image"]),
        fuzz=3)}


PATHS: dict[str, Any] = {
    "/v1/image/removebackground": {"post": codeproject(
        "The photo as a PNG with the background transparent", TAG, _result("imageBase64"),
        body=form_body({"image": IMAGE, "use_alphamatting": boolean("Refine the edges (true/false)")}, ["image"]),
        fuzz=6)},
    "/v1/image/portraitfilter": {"post": codeproject(
        "The photo with the background blurred", TAG, _result("filtered_image"),
        body=form_body({"image": IMAGE, "strength": fraction("How much to blur", 0.5)}, ["image"]), fuzz=6)},
    "/v1/image/superresolution": {"post": codeproject(
        "The photo at twice the size (input up to 1 megapixel)", TAG, _result("imageBase64"),
        body=form_body({"image": IMAGE}, ["image"]), fuzz=4)},
    "/v1/image/cartoonise": _cartoon(),
    "/v1/image/cartoonize": _cartoon(),
}
