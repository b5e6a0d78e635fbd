"""Ultralytics HUB dialect: the seed 004 examples (python requests, curl) against the daemon, argument ranges."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from dialect_clients import curl_json, requests_call

from conftest import IMAGES, form, image_bytes


def _check_detection_shape(body: dict[str, Any]) -> None:
    assert body["success"] is True and body["message"] == "Inference complete."
    for item in body["data"]:
        assert set(item) == {"name", "class", "confidence", "box"}
        assert set(item["box"]) == {"x1", "y1", "x2", "y2"}
        assert isinstance(item["class"], int) and 0 <= item["confidence"] <= 1


async def test_seed_python_example(cp: TestClient) -> None:
    # Verbatim shape of the seed's python: headers, data and files as given, MODEL_ID = a manifest id.
    url = str(cp.make_url("/v1/predict/ssd_mobilenet_v1"))
    headers = {"x-api-key": "API_KEY"}
    data = {"size": 640, "confidence": 0.25, "iou": 0.45}
    with open(IMAGES / "dog_bicycle_car.jpg", "rb") as image_file:
        files = {"image": image_file}
        response = await requests_call("POST", url, headers=headers, files=files, data=data)
    assert response.status_code == 200
    body = response.json()
    _check_detection_shape(body)
    names = [d["name"] for d in body["data"]]
    assert {"dog", "bicycle", "car"} <= set(names)
    assert all(d["confidence"] >= 0.25 for d in body["data"])
    dog = next(d for d in body["data"] if d["name"] == "dog")
    # Pixels of the 768x576 photo by default; the dog is in the lower left. COCO-80 class numbers (dog = 16).
    assert dog["class"] == 16 and dog["box"]["x1"] < 200 and dog["box"]["y2"] > 450


async def test_seed_curl_example_default_model(cp: TestClient) -> None:
    status, body = await curl_json(
        "-X", "POST", str(cp.make_url("/v1/predict/default")), "-H", "x-api-key: API_KEY",
        "-F", f"image=@{IMAGES / 'pets.jpg'}", "-F", "size=640", "-F", "confidence=0.25", "-F", "iou=0.45")
    assert status == 200
    _check_detection_shape(body)
    assert [d["name"] for d in body["data"]][:2] == ["dog", "dog"]


async def test_normalize_and_other_model(cp: TestClient) -> None:
    resp = await cp.post("/v1/predict/yolox_nano", data=form(image_bytes("dog_bicycle_car.jpg"), normalize="true"))
    body = await resp.json()
    assert resp.status == 200, body
    _check_detection_shape(body)
    assert {"dog", "bicycle", "car"} <= {d["name"] for d in body["data"]}
    for d in body["data"]:
        box = d["box"]
        assert 0 <= box["x1"] < box["x2"] <= 1 and 0 <= box["y1"] < box["y2"] <= 1


async def test_confidence_and_iou_apply(cp: TestClient) -> None:
    data = image_bytes("kite_and_cold.jpg")
    low = await (await cp.post("/v1/predict/yolox_nano", data=form(data, confidence=0.1))).json()
    high = await (await cp.post("/v1/predict/yolox_nano", data=form(data, confidence=0.6))).json()
    assert len(low["data"]) > len(high["data"]) > 0
    assert all(d["confidence"] >= 0.6 for d in high["data"])
    counts = []
    for iou in (0.0, 0.45, 0.95):
        body = await (await cp.post("/v1/predict/yolox_nano", data=form(data, confidence=0.05, iou=iou))).json()
        counts.append(len(body["data"]))
    assert 0 < counts[0] < counts[1] < counts[2], f"a lower IoU suppresses more overlapping boxes: {counts}"


@pytest.mark.parametrize(("field", "value"), [
    ("size", 16), ("size", 2000), ("size", "big"), ("confidence", 0), ("confidence", 1.5), ("iou", 0.99),
    ("iou", "NaN"), ("normalize", "perhaps"),
])
async def test_out_of_range_is_400(cp: TestClient, field: str, value: Any) -> None:
    resp = await cp.post("/v1/predict/default", data=form(image_bytes("pets.jpg"), **{field: value}))
    assert resp.status == 400
    body = await resp.json()
    assert body["success"] is False and field in body["message"]


async def test_errors_in_ultralytics_shape(cp: TestClient) -> None:
    resp = await cp.post("/v1/predict/default", data=form(None, size=640))
    assert resp.status == 400 and "image" in (await resp.json())["message"]
    resp = await cp.post("/v1/predict/default", data=form(b"not an image at all"))
    body = await resp.json()
    assert resp.status == 400 and body["success"] is False and "image" in body["message"]
    resp = await cp.post("/v1/predict/no_such_model", data=form(image_bytes("pets.jpg")))
    body = await resp.json()
    assert resp.status == 404 and "ssd_mobilenet_v1" in body["message"]
    # `url` needs fetching, which is off by default.
    resp = await cp.post("/v1/predict/default", data=form(None, url="http://example.com/a.jpg"))
    body = await resp.json()
    assert resp.status == 403 and "disabled" in body["message"]
