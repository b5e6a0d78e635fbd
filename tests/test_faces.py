"""Face routes with the real YuNet detector and dlib descriptors: register, recognise, match, list, delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from perch.daemon.api.common import CODEPROJECT, DEEPSTACK
from perch.daemon.app import create_app
from perch.daemon.config import Settings
from perch.daemon.core import Core

from conftest import MODELS, image_bytes

# One Core (and one load of the face models) for the whole module.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def form(files: dict[str, bytes] | None = None, **fields: Any) -> FormData:
    fd = FormData()
    for name, data in (files or {}).items():
        fd.add_field(name, data, filename=f"{name}.jpg", content_type="image/jpeg")
    for key, value in fields.items():
        fd.add_field(key, str(value))
    return fd


def face(name: str) -> bytes:
    return image_bytes(f"faces/{name}")


def module_settings(tmp: Path) -> Settings:
    return Settings(model_dir=MODELS, state_dir=tmp / "state", cache_dir=tmp / "cache", legacy_port=0,
                    cpu={"workers": 2, "threads": 1})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def face_core(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Core]:
    core = Core(module_settings(tmp_path_factory.mktemp("faces")))
    await core.start()
    yield core
    await core.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cp(face_core: Core) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(face_core, CODEPROJECT))) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ds(face_core: Core) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(face_core, DEEPSTACK))) as client:
        yield client


async def post_status(client: TestClient, path: str, data: FormData | None = None) -> tuple[int, dict[str, Any]]:
    resp = await client.post(path, data=data)
    return resp.status, await resp.json()


async def post(client: TestClient, path: str, data: FormData | None = None) -> dict[str, Any]:
    return (await post_status(client, path, data))[1]


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
    body = await post(cp, "/v1/vision/face", form({"image": image_bytes("face.jpg")}, min_confidence=0.99))
    assert body["success"] and body["predictions"] == []


async def test_no_face_in_the_photo(cp: TestClient, ds: TestClient) -> None:
    body = await post(cp, "/v1/vision/face", form({"image": image_bytes("dog_bicycle_car.jpg")}))
    assert body["success"] and body["predictions"] == [] and body["message"] == "No faces found"
    # Registering a dog is refused: CodeProject semantics say so in the body, DeepStack with the status.
    dog = {"image": image_bytes("pets.jpg")}
    status, body = await post_status(cp, "/v1/vision/face/register", form(dog, userid="rex"))
    assert status == 200 and body["success"] is False and body["code"] == 400
    assert "No face detected" in body["error"]
    status, body = await post_status(ds, "/v1/vision/face/register", form(dog, userid="rex"))
    assert status == 400 and "No face detected" in body["error"]
    body = await post(cp, "/v1/vision/face/match",
                              form({"image1": face("test_obama1.jpg"), "image2": image_bytes("pets.jpg")}))
    assert body["success"] is False and "image2" in body["error"]
    body = await post(cp, "/v1/vision/face/list")
    assert "rex" not in body["faces"]


async def test_register_recognise_list_delete(cp: TestClient, face_core: Core) -> None:
    body = await post(cp, "/v1/vision/face/register",
                              form({"image": face("train_obama_obama.jpg")}, userid="obama"))
    assert body["success"] is True and body["message"] == "face added", body
    # 1..N files under any field names; their descriptors are averaged into the stored one.
    body = await post(cp, "/v1/vision/face/register",
                              form({"first": face("train_obama_obama2.jpg")}, userid="obama"))
    assert body["success"] and body["message"] == "face updated"
    body = await post(cp, "/v1/vision/face/register",
                              form({"a": face("train_biden_biden.jpg"), "b": face("train_biden_biden2.jpg")},
                                   userid="biden"))
    assert body["success"] and body["message"] == "face added" and body["faces"] == 2

    # The same person in a photo that was not registered.
    body = await post(cp, "/v1/vision/face/recognize", form({"image": face("test_obama1.jpg")}))
    assert body["success"], body
    assert [p["userid"] for p in body["predictions"]] == ["obama"]
    assert body["predictions"][0]["confidence"] >= 0.67

    # A different person is unknown, with confidence 0.
    body = await post(cp, "/v1/vision/face/recognize", form({"image": face("train_rose_leslie_img1.jpg")}))
    assert [(p["userid"], p["confidence"]) for p in body["predictions"]] == [("unknown", 0.0)]

    # Both registered people in one photo, each with a box in that photo.
    body = await post(cp, "/v1/vision/face/recognize", form({"image": face("test_obama_and_biden.jpg")}))
    found = {p["userid"]: p for p in body["predictions"] if p["userid"] != "unknown"}
    assert set(found) == {"obama", "biden"}
    assert found["biden"]["x_max"] < found["obama"]["x_min"], "Biden stands left of Obama in the photo"

    body = await post(cp, "/v1/vision/face/list")
    assert body["success"] and body["faces"] == ["biden", "obama"]

    body = await post(cp, "/v1/vision/face/delete", form(userid="biden"))
    assert body["success"] is True
    body = await post(cp, "/v1/vision/face/list")
    assert body["faces"] == ["obama"]
    body = await post(cp, "/v1/vision/face/recognize", form({"image": face("train_biden_biden.jpg")}))
    assert [p["userid"] for p in body["predictions"]] == ["unknown"]

    # The database outlives the daemon: a new Core on the same state directory knows obama.
    other = Core(face_core.settings.model_copy())
    try:
        assert other.store.list_faces() == ["obama"]
    finally:
        await other.close()


async def test_match_same_person_scores_above_different_people(cp: TestClient) -> None:
    async def similarity(a: bytes, b: bytes) -> float:
        body = await post(cp, "/v1/vision/face/match", form({"image1": a, "image2": b}))
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
