"""Turn uploaded bytes into a BGR image, refusing what would hurt the appliance before decoding it."""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageError(ValueError):
    """The upload is not a usable image; the message is shown to the API client."""


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header alone, so a 30000×30000 PNG is refused before it is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return (img.format or "unknown", int(img.width), int(img.height))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image is too large to decode safely: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError("the uploaded file is not an image in a known format (JPEG, PNG, BMP, WebP, GIF…)") from exc


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    if not data:
        raise ImageError("the image is empty")
    fmt, width, height = image_size(data)
    if width <= 0 or height <= 0:
        raise ImageError(f"the image has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"the image is {width}×{height} pixels; this server accepts at most {max_pixels / 1e6:.0f} megapixels"
        )
    # libjpeg pads a truncated JPEG with grey and says nothing; detections on half a frame are worse than an error.
    if fmt == "JPEG" and b"\xff\xd9" not in data[-4096:]:
        raise ImageError("the JPEG image is truncated (no end-of-image marker)")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        # Formats OpenCV lacks (GIF, some WebP/TIFF flavours) still decode through Pillow.
        try:
            with Image.open(io.BytesIO(data)) as img:
                rgb = np.asarray(img.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(f"the {fmt} image could not be decoded: {exc}") from exc
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    return bgr
