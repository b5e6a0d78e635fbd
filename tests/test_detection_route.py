"""POST /v1/vision/detection: real inference, the response contract, and every kind of bad input."""

from __future__ import annotations

import io
import struct
import zlib
from functools import partial
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

import conftest
from conftest import image_bytes

CONTRACT_FIELDS = {
    "success", "message", "count", "predictions", "inferenceMs", "processMs", "analysisRoundTripMs", "moduleId",
    "moduleName", "command", "requestId", "inferenceDevice", "processedBy", "timestampUTC", "code",
}


form = partial(conftest.form, filename="upload.jpg")


async def test_dog_bicycle_car(cp: TestClient) -> None:
    resp = await cp.post("/v1/vision/detection", data=form(image_bytes("dog_bicycle_car.jpg")))
    assert resp.status == 200
    assert resp.headers.get("Content-Length") and "chunked" not in resp.headers.get("Transfer-Encoding", "")
    body = await resp.json()
    assert body.keys() >= CONTRACT_FIELDS
    assert body["success"] is True and body["code"] == 200
    labels = [p["label"] for p in body["predictions"]]
    assert {"dog", "bicycle", "car"} <= set(labels)
    confidences = [p["confidence"] for p in body["predictions"]]
    assert confidences == sorted(confidences, reverse=True), "highest confidence first (Frigate relies on it)"
    assert all(c >= 0.4 for c in confidences)
    assert body["count"] == len(body["predictions"])
    assert body["message"].startswith("Found ") and "dog" in body["message"]
    assert body["inferenceDevice"] == "CPU"
    for p in body["predictions"]:
        for key in ("x_min", "y_min", "x_max", "y_max"):
            assert isinstance(p[key], int)
        assert 0 <= p["x_min"] < p["x_max"] <= 768 and 0 <= p["y_min"] < p["y_max"] <= 576
    dog = next(p for p in body["predictions"] if p["label"] == "dog")
    # The dog sits in the lower left of the photo.
    assert dog["x_min"] < 200 and dog["y_max"] > 450


async def test_grace_hopper_is_a_person(cp: TestClient) -> None:
    body = await (await cp.post("/v1/vision/detection", data=form(image_bytes("grace_hopper.bmp")))).json()
    assert body["success"] and body["predictions"][0]["label"] == "person"


async def test_min_confidence_filters_and_query_string_merges(cp: TestClient) -> None:
    data = image_bytes("dog_bicycle_car.jpg")
    high = await (await cp.post("/v1/vision/detection?min_confidence=0.7", data=form(data))).json()
    assert high["success"] and all(p["confidence"] >= 0.7 for p in high["predictions"])
    assert [p["label"] for p in high["predictions"]] == ["bicycle"]
    none = await (await cp.post("/v1/vision/detection", data=form(data, min_confidence=1))).json()
    assert none["success"] and none["count"] == 0 and none["message"] == "No objects found"


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_bomb(width: int, height: int) -> bytes:
    """A well-formed PNG whose header claims width×height; only the first rows of data are present."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width * 3 + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _bad_inputs() -> list[tuple[str, FormData | bytes | None, str]]:
    jpeg = image_bytes("dog_bicycle_car.jpg")
    return [
        ("empty body", None, "image"),
        ("no file", form(None, min_confidence=0.5), "image"),
        ("wrong field name", form(jpeg, field="picture"), "image"),
        ("empty file", form(b""), "empty"),
        ("text as image", form(b"hello, I am not a picture\n" * 10), "not an image"),
        ("truncated jpeg", form(jpeg[: len(jpeg) // 2]), "truncated"),
        ("30000x30000 png", form(_png_bomb(30000, 30000)), "large"),
        ("min_confidence -1", form(jpeg, min_confidence=-1), "min_confidence"),
        ("min_confidence 7", form(jpeg, min_confidence=7), "min_confidence"),
        ("min_confidence NaN", form(jpeg, min_confidence="NaN"), "min_confidence"),
        ("min_confidence abc", form(jpeg, min_confidence="abc"), "min_confidence"),
    ]


@pytest.mark.parametrize(("case", "payload", "needle"), _bad_inputs(), ids=[c[0] for c in _bad_inputs()])
async def test_bad_input_codeproject_is_http_200(cp: TestClient, case: str, payload: Any, needle: str) -> None:
    resp = await cp.post("/v1/vision/detection", data=payload)
    assert resp.status == 200
    body = await resp.json()
    assert body["success"] is False and body["code"] == 400
    assert needle.lower() in body["error"].lower()


@pytest.mark.parametrize(("case", "payload", "needle"), _bad_inputs(), ids=[c[0] for c in _bad_inputs()])
async def test_bad_input_deepstack_is_http_400(ds: TestClient, case: str, payload: Any, needle: str) -> None:
    resp = await ds.post("/v1/vision/detection", data=payload)
    assert resp.status == 400
    body = await resp.json()
    assert body["success"] is False and needle.lower() in body["error"].lower()


async def test_daemon_survives_bad_input_then_serves(cp: TestClient) -> None:
    for _, payload, _ in _bad_inputs():
        await cp.post("/v1/vision/detection", data=payload)
    body = await (await cp.post("/v1/vision/detection", data=form(image_bytes("pets.jpg")))).json()
    assert body["success"] and [p["label"] for p in body["predictions"]][:2] == ["dog", "dog"]


async def test_urlencoded_form_without_image(cp: TestClient) -> None:
    resp = await cp.post("/v1/vision/detection", data={"min_confidence": "0.5"})
    body = await resp.json()
    assert resp.status == 200 and body["success"] is False and "image" in body["error"]


async def test_png_and_gif_uploads_decode(cp: TestClient) -> None:
    from PIL import Image

    img = Image.open(io.BytesIO(image_bytes("pets.jpg")))
    for fmt in ("PNG", "GIF"):
        buf = io.BytesIO()
        img.save(buf, fmt)
        body = await (await cp.post("/v1/vision/detection", data=form(buf.getvalue()))).json()
        assert body["success"], body
        assert "dog" in [p["label"] for p in body["predictions"]]


async def test_unknown_route_and_wrong_method(cp: TestClient, ds: TestClient) -> None:
    for client in (cp, ds):
        resp = await client.post("/v1/vision/nothing-here", data=form(image_bytes("pets.jpg")))
        assert resp.status == 404
        assert (await resp.json())["success"] is False
        resp = await client.get("/v1/vision/detection")
        assert resp.status == 405
