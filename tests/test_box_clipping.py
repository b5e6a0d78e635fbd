"""Every box of every dialect and task lies inside the image: 0 <= x_min <= x_max <= width - 1 (same for y), in
integer pixels or as the matching fractions. Checked over every CPU detector, faces, plates and the scene route on
photos cropped from ../shared so that objects touch or cross the borders (raw model boxes reach past them: SSD
MobileNet answered x_min -1 on a 320x320 cat before boxes were clipped)."""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from perch.daemon.api.common import CODEPROJECT, DEEPSTACK

from conftest import IMAGES, form, module_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

cp = module_client(CODEPROJECT)
ds = module_client(DEEPSTACK)

DETECTORS = ["ssd_mobilenet_v1", "yolox_nano", "yolov8n"]


def _crop(name: str, y0: float, y1: float, x0: float, x1: float, size: tuple[int, int] | None = None) -> np.ndarray:
    img = cv2.imread(str(IMAGES / name))
    h, w = img.shape[:2]
    out = img[int(h * y0):int(h * y1), int(w * x0):int(w * x1)]
    return cv2.resize(out, size) if size else out


@cache
def border_photos() -> dict[str, bytes]:
    """Photos whose objects cross the borders, as JPEG bytes."""
    photos = {
        "cat_320": _crop("cat.bmp", 0, 1, 0, 1, (320, 320)),  # the case
        "dog_cut_left": _crop("dog_bicycle_car.jpg", 0.05, 0.8, 0.27, 1),
        "dogs_cut": _crop("pets.jpg", 0.15, 1, 0.3, 0.85),
        "kites_cut": _crop("kite_and_cold.jpg", 0.2, 0.9, 0.1, 0.6),
        "faces_cut": _crop("face.jpg", 0.1, 0.75, 0.12, 0.88),
        "plate_cut": _crop("plate_wa_azm9591.jpg", 0.3, 0.84, 0.2, 0.62),  # the plate reaches two borders
    }
    # A padded one too: the object now lies at the far edge of a wider frame.
    pets = cv2.imread(str(IMAGES / "pets.jpg"))
    photos["dogs_padded"] = cv2.copyMakeBorder(pets[:, : pets.shape[1] // 2], 0, 0, 200, 0, cv2.BORDER_CONSTANT)
    return {k: cv2.imencode(".jpg", v)[1].tobytes() for k, v in photos.items()}


def size_of(data: bytes) -> tuple[int, int]:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return img.shape[1], img.shape[0]


TOUCHING: set[str] = set()  # which photos really produced a box on the border (checked at the end)


def inside(box: tuple[float, float, float, float], w: int, h: int, where: str, fraction: bool = False) -> None:
    x1, y1, x2, y2 = box
    xmax, ymax = ((w - 1) / w, (h - 1) / h) if fraction else (w - 1, h - 1)
    assert 0 <= x1 <= x2 <= xmax + 1e-9 and 0 <= y1 <= y2 <= ymax + 1e-9, (where, box, (w, h))
    if not fraction:
        assert all(float(v).is_integer() for v in box), (where, box)
        if x1 == 0 or y1 == 0 or x2 == w - 1 or y2 == h - 1:
            TOUCHING.add(where.split(":")[0])


def cp_boxes(body: dict[str, Any], w: int, h: int, where: str) -> int:
    assert body.get("success") is not False, (where, body)
    for p in body.get("predictions", []):
        inside((p["x_min"], p["y_min"], p["x_max"], p["y_max"]), w, h, where)
    return len(body.get("predictions", []))


async def post(client: TestClient, path: str, data: Any, **kw: Any) -> dict[str, Any]:
    resp = await client.post(path, data=data, **kw)
    assert resp.status == 200, (path, await resp.text())
    return dict(await resp.json())


@pytest.mark.parametrize("model", DETECTORS)
async def test_detector_boxes_in_every_dialect(cp: TestClient, ds: TestClient, model: str) -> None:
    found = 0
    for name, data in border_photos().items():
        w, h = size_of(data)
        where = f"{name}:{model}"
        for client in (cp, ds):
            body = await post(client, f"/v1/vision/custom/{model}", form(data, min_confidence=0.2))
            found += cp_boxes(body, w, h, where)
        body = await post(cp, f"/v1/predict/{model}", form(data, confidence=0.2))
        for d in body["data"]:
            inside((d["box"]["x1"], d["box"]["y1"], d["box"]["x2"], d["box"]["y2"]), w, h, where)
        body = await post(cp, f"/v1/predict/{model}", form(data, confidence=0.2, normalize="true"))
        for d in body["data"]:
            inside((d["box"]["x1"], d["box"]["y1"], d["box"]["x2"], d["box"]["y2"]), w, h, where, fraction=True)
        body = await post(cp, f"/{model}/1?confidence=20", base64.b64encode(data),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert (body["image"]["width"], body["image"]["height"]) == (w, h)
        for p in body["predictions"]:
            half_w, half_h = p["width"] / 2, p["height"] / 2
            inside((p["x"] - half_w, p["y"] - half_h, p["x"] + half_w, p["y"] + half_h), w, h, where)
    assert found > 10


async def test_default_detector_faces_plates_and_scene(cp: TestClient, ds: TestClient) -> None:
    faces = plates = 0
    for name, data in border_photos().items():
        w, h = size_of(data)
        for client in (cp, ds):
            cp_boxes(await post(client, "/v1/vision/detection", form(data, min_confidence=0.2)), w, h, name)
            faces += cp_boxes(await post(client, "/v1/vision/face", form(data, min_confidence=0.3)), w, h, name)
            cp_boxes(await post(client, "/v1/vision/face/recognize", form(data, min_confidence=0.3)), w, h, name)
            scene = await post(client, "/v1/vision/scene", form(data))
            assert scene["success"] and scene["label"]
        if name in ("plate_cut", "dog_cut_left"):
            plates += cp_boxes(await post(cp, "/v1/vision/alpr", form(data, field="upload")), w, h, name)
        body = await post(cp, "/recog", form(data, field="file", model="4", threshold="0.3"))
        for f in body["results"]["faces"]:
            inside((f["xpos"], f["ypos"], f["xpos"] + f["width"], f["ypos"] + f["height"]), w, h, name)
        body = await post(cp, "/recog", form(data, field="file", model="41", threshold="0.3"))
        for f in body["results"]["faces"]:
            inside((f["left"], f["top"], f["right"], f["bottom"]), w, h, name, fraction=True)
    assert faces >= 3 and plates >= 1
    # The crops did their job: boxes really reached the borders, and stayed inside.
    assert {"cat_320", "dog_cut_left", "dogs_cut", "faces_cut", "plate_cut"} <= TOUCHING, TOUCHING
