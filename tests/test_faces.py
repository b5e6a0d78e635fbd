"""Face routes with the real YuNet detector and dlib descriptors: register, recognise, match, list, delete."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from perch.daemon.api.common import CODEPROJECT, DEEPSTACK
from perch.daemon.core import Core

from conftest import form, image_bytes, module_client, post_json, post_status

# One Core (one load of the face models, one gallery) for the whole module.
pytestmark = pytest.mark.asyncio(loop_scope="module")

cp = module_client(CODEPROJECT)
ds = module_client(DEEPSTACK)


def face(name: str) -> bytes:
    return image_bytes(f"faces/{name}")


async def test_detect_four_faces(cp: TestClient, ds: TestClient) -> None:
    status, body = await post_status(cp, "/v1/vision/face", form({"image": image_bytes("face.jpg")}))
    assert status == 200 and body["success"] is True
    preds = body["predictions"]
    assert len(preds) == 4 and body["count"] == 4
    assert all(p["label"] == "face" and p["confidence"] >= 0.67 for p in preds)
    assert [p["confidence"] for p in preds] == sorted((p["confidence"] for p in preds), reverse=True)
    for p in preds:
        assert 0 <= p["x_min"] < p["x_max"] <= 512 and 0 <= p["y_min"] < p["y_max"] <= 355
        # Faces, not bodies: a face box is small against the 512×355 group photo.
        assert (p["x_max"] - p["x_min"]) < 150
    # DeepStack-era clients post to the trailing-slash route.
    status, body = await post_status(ds, "/v1/vision/face/", form({"image": image_bytes("grace_hopper.bmp")}))
    assert status == 200 and len(body["predictions"]) == 1
    body = await post_json(cp, "/v1/vision/face", form({"image": image_bytes("face.jpg")}, min_confidence=0.99))
    assert body["success"] and body["predictions"] == []


async def test_no_face_in_the_photo(cp: TestClient, ds: TestClient) -> None:
    body = await post_json(cp, "/v1/vision/face", form({"image": image_bytes("dog_bicycle_car.jpg")}))
    assert body["success"] and body["predictions"] == [] and body["message"] == "No faces found"
    # Registering a dog is refused: CodeProject semantics say so in the body, DeepStack with the status.
    dog = {"image": image_bytes("pets.jpg")}
    status, body = await post_status(cp, "/v1/vision/face/register", form(dog, userid="rex"))
    assert status == 200 and body["success"] is False and body["code"] == 400
    assert "No face detected" in body["error"]
    status, body = await post_status(ds, "/v1/vision/face/register", form(dog, userid="rex"))
    assert status == 400 and "No face detected" in body["error"]
    body = await post_json(cp, "/v1/vision/face/match",
                           form({"image1": face("test_obama1.jpg"), "image2": image_bytes("pets.jpg")}))
    assert body["success"] is False and "image2" in body["error"]
    body = await post_json(cp, "/v1/vision/face/list")
    assert "rex" not in body["faces"]


async def test_register_recognise_list_delete(cp: TestClient, module_core: Core) -> None:
    body = await post_json(cp, "/v1/vision/face/register",
                           form({"image": face("train_obama_obama.jpg")}, userid="obama"))
    assert body["success"] is True and body["message"] == "face added", body
    # 1..N files under any field names; their descriptors are averaged into the stored one.
    body = await post_json(cp, "/v1/vision/face/register",
                           form({"first": face("train_obama_obama2.jpg")}, userid="obama"))
    assert body["success"] and body["message"] == "face updated"
    body = await post_json(cp, "/v1/vision/face/register",
                           form({"a": face("train_biden_biden.jpg"), "b": face("train_biden_biden2.jpg")},
                                userid="biden"))
    assert body["success"] and body["message"] == "face added" and body["faces"] == 2

    # The same person in a photo that was not registered.
    body = await post_json(cp, "/v1/vision/face/recognize", form({"image": face("test_obama1.jpg")}))
    assert body["success"], body
    assert [p["userid"] for p in body["predictions"]] == ["obama"]
    assert body["predictions"][0]["confidence"] >= 0.67

    # A different person is unknown, with confidence 0.
    body = await post_json(cp, "/v1/vision/face/recognize", form({"image": face("train_rose_leslie_img1.jpg")}))
    assert [(p["userid"], p["confidence"]) for p in body["predictions"]] == [("unknown", 0.0)]

    # Both registered people in one photo, each with a box in that photo.
    body = await post_json(cp, "/v1/vision/face/recognize", form({"image": face("test_obama_and_biden.jpg")}))
    found = {p["userid"]: p for p in body["predictions"] if p["userid"] != "unknown"}
    assert set(found) == {"obama", "biden"}
    assert found["biden"]["x_max"] < found["obama"]["x_min"], "Biden stands left of Obama in the photo"

    body = await post_json(cp, "/v1/vision/face/list")
    assert body["success"] and body["faces"] == ["biden", "obama"]

    body = await post_json(cp, "/v1/vision/face/delete", form(userid="biden"))
    assert body["success"] is True
    body = await post_json(cp, "/v1/vision/face/list")
    assert body["faces"] == ["obama"]
    body = await post_json(cp, "/v1/vision/face/recognize", form({"image": face("train_biden_biden.jpg")}))
    assert [p["userid"] for p in body["predictions"]] == ["unknown"]

    # The database outlives the daemon: a new Core on the same state directory knows obama.
    other = Core(module_core.settings.model_copy())
    try:
        assert other.store.list_faces() == ["obama"]
    finally:
        await other.close()


async def test_match_same_person_scores_above_different_people(cp: TestClient) -> None:
    async def similarity(a: bytes, b: bytes) -> float:
        body = await post_json(cp, "/v1/vision/face/match", form({"image1": a, "image2": b}))
        assert body["success"], body
        return float(body["similarity"])

    same = await similarity(face("test_obama1.jpg"), face("train_obama_obama.jpg"))
    same2 = await similarity(face("train_kit_harington_john1.jpeg"), face("train_kit_harington_john2.jpeg"))
    different = await similarity(face("test_obama1.jpg"), face("train_biden_biden.jpg"))
    different2 = await similarity(face("train_rose_leslie_img1.jpg"), face("train_kit_harington_john1.jpeg"))
    assert min(same, same2) > 0.7 and max(different, different2) < 0.3
    assert 0.0 <= different < same <= 1.0


async def test_bad_requests(cp: TestClient, ds: TestClient) -> None:
    cases = [
        ("/v1/vision/face/register", form({"image": face("test_obama1.jpg")}), "userid"),
        ("/v1/vision/face/register", form(userid="nobody"), "image"),
        ("/v1/vision/face/delete", form(userid="never-registered"), "not registered"),
        ("/v1/vision/face/delete", form(), "userid"),
        ("/v1/vision/face/recognize", form(), "image"),
        ("/v1/vision/face/recognize", form({"image": b"not an image at all"}), "not an image"),
        ("/v1/vision/face", form({"image": image_bytes("face.jpg")}, min_confidence=3), "min_confidence"),
        ("/v1/vision/face/match", form({"image1": face("test_obama1.jpg")}), "image2"),
    ]
    for path, data, needle in cases:
        status, body = await post_status(cp, path, data)
        assert status == 200 and body["success"] is False and body["code"] == 400, (path, body)
        assert needle.lower() in body["error"].lower(), (path, body)
    status, body = await post_status(ds, "/v1/vision/face/delete", form(userid="never-registered"))
    assert status == 400 and body["success"] is False
