"""Scene, licence plates and custom detection models over HTTP, with the real models."""

from __future__ import annotations

import shutil

import pytest
import yaml
from aiohttp.test_utils import TestClient

from perch.daemon.api.common import CODEPROJECT, DEEPSTACK
from perch.daemon.core import Core

from conftest import MODELS, form, image_bytes, module_client, post_json

pytestmark = pytest.mark.asyncio(loop_scope="module")

cp = module_client(CODEPROJECT)
ds = module_client(DEEPSTACK)


# ---- scene ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("photo", "label"), [("parrot.jpg", "macaw"), ("hot_dog.jpg", "hotdog"),
                                              ("grace_hopper.bmp", "military uniform")])
async def test_scene(cp: TestClient, photo: str, label: str) -> None:
    body = await post_json(cp, "/v1/vision/scene", form({"image": image_bytes(photo)}))
    assert body["success"] and body["label"] == label and 0.5 < body["confidence"] <= 1.0
    assert body["moduleId"] == "SceneClassifier" and body["inferenceDevice"] == "CPU"


async def test_scene_without_image(cp: TestClient, ds: TestClient) -> None:
    body = await post_json(cp, "/v1/vision/scene", form())
    assert body["success"] is False and body["code"] == 400
    resp = await ds.post("/v1/vision/scene", data=form())
    assert resp.status == 400


# ---- licence plates ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("photo", "plate", "route", "field"), [
    ("plate_h786poj.jpg", "H786POJ", "/v1/vision/alpr", "upload"),
    ("plate_wa_azm9591.jpg", "AZM9591", "/v1/image/alpr", "upload"),
    ("plate_wa_wattup.jpg", "WATTUP", "/v1/vision/alpr", "image"),
])
async def test_alpr_reads_the_shared_plates(cp: TestClient, photo: str, plate: str, route: str, field: str) -> None:
    body = await post_json(cp, route, form({field: image_bytes(photo)}))
    assert body["success"], body
    # Only the plate: not "WASHINGTON", the registration sticker or the car's badge.
    assert [p["plate"] for p in body["predictions"]] == [plate]
    pred = body["predictions"][0]
    assert pred["label"] == f"Plate: {plate}" and 0.5 < pred["confidence"] <= 1.0
    assert body["count"] == 1 and body["message"] == f"Found Plate: {plate}"
    assert 0 <= pred["x_min"] < pred["x_max"] and 0 <= pred["y_min"] < pred["y_max"]


async def test_alpr_plate_box_is_on_the_plate(cp: TestClient) -> None:
    body = await post_json(cp, "/v1/vision/alpr", form({"upload": image_bytes("plate_h786poj.jpg")}))
    p = body["predictions"][0]
    # The plate sits low in the middle of the 480×640 photo, below the grille.
    cx, cy = (p["x_min"] + p["x_max"]) / 2, (p["y_min"] + p["y_max"]) / 2
    assert 150 < cx < 330 and 350 < cy < 450
    assert (p["x_max"] - p["x_min"]) > 2 * (p["y_max"] - p["y_min"])


async def test_alpr_without_plates_and_bad_input(cp: TestClient, ds: TestClient) -> None:
    body = await post_json(cp, "/v1/vision/alpr", form({"upload": image_bytes("pets.jpg")}))
    assert body["success"] and body["predictions"] == [] and body["message"] == "No plates found"
    body = await post_json(cp, "/v1/image/alpr", form())
    assert body["success"] is False and "upload" in body["error"]
    resp = await ds.post("/v1/vision/alpr", data=form({"upload": b"GIF89a broken"}))
    assert resp.status == 400 and (await resp.json())["success"] is False


# ---- custom models ----------------------------------------------------------------------------------------------

async def test_custom_list_names_every_detection_model(cp: TestClient) -> None:
    for method in ("POST", "GET"):
        resp = await cp.request(method, "/v1/vision/custom/list")
        body = await resp.json()
        assert body["success"] and {"ssd_mobilenet_v1", "yolox_nano", "yolov8n"} <= set(body["models"])
        # Face, OCR, scene… models are not detection models.
        assert "yunet_face" not in body["models"] and "mobilenet_v2_imagenet" not in body["models"]


async def test_custom_route_runs_the_named_model(cp: TestClient) -> None:
    body = await post_json(cp, "/v1/vision/custom/yolox_nano", form({"image": image_bytes("dog_bicycle_car.jpg")}))
    assert body["success"] and body["predictions"][0]["label"] == "dog"
    assert {"dog", "bicycle", "car"} <= {p["label"] for p in body["predictions"]}


@pytest.mark.parametrize("name", ["..", ".hidden", "a.b", "%00", "x%00y", "bad%2Fname", "nope", "yunet_face"])
async def test_custom_route_refuses_names(cp: TestClient, ds: TestClient, name: str) -> None:
    resp = await cp.post(f"/v1/vision/custom/{name}", data=form({"image": image_bytes("pets.jpg")}))
    body = await resp.json()
    assert body["success"] is False
    # Rejected by the handler (CodeProject: 200 + code) or never routed at all (404).
    assert resp.status == 404 or body["code"] in (400, 404), body
    resp = await ds.post(f"/v1/vision/custom/{name}", data=form({"image": image_bytes("pets.jpg")}))
    assert resp.status in (400, 404)


async def test_dropped_in_model_is_served_without_restart(cp: TestClient, module_core: Core) -> None:
    directory = module_core.settings.effective_custom_model_dir
    directory.mkdir(parents=True, exist_ok=True)
    # A link, not a copy: the model stays in the shared folder.
    (directory / "gate-cam.onnx").symlink_to(MODELS / "detection" / "yolox_nano.onnx")
    labels = module_core.manifest.label_sets["coco80"]
    (directory / "gate-cam.yaml").write_text(yaml.safe_dump({
        "decoder": "yolox", "labels": labels,
        "input": {"size": [416, 416], "layout": "NCHW", "color": "BGR", "resize": "letterbox",
                  "align": "top-left", "normalize": "raw"},
    }))
    (directory / "broken.yaml").write_text("decoder: yolox\n")  # no model file: listed as a problem
    body = await post_json(cp, "/v1/vision/custom/list")
    assert "gate-cam" in body["models"] and "broken" not in body["models"]
    assert "broken.yaml" in body["problems"]
    body = await post_json(cp, "/v1/vision/custom/gate-cam", form(image_bytes("pets.jpg"), min_confidence=0.5))
    assert body["success"] and [p["label"] for p in body["predictions"]] == ["dog", "dog"]
    # Removing the sidecar removes the model from the list.
    (directory / "gate-cam.yaml").unlink()
    body = await post_json(cp, "/v1/vision/custom/list")
    assert "gate-cam" not in body["models"]
    shutil.rmtree(directory)
