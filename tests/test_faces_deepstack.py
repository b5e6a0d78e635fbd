"""Compatibility with the `deepstack-python` client from PyPI (what Home Assistant's DeepStack face integration uses).

The client speaks HTTP with `requests` against a real listener with DeepStack semantics; it has no delete call, so
delete is posted the way DeepStack documents it.
"""

from __future__ import annotations

import asyncio

import requests
from aiohttp.test_utils import TestServer
from deepstack.core import DeepstackException, DeepstackFace, DeepstackObject

from perch.daemon.api.common import DEEPSTACK
from perch.daemon.app import create_app
from perch.daemon.core import Core

from conftest import image_bytes


async def test_deepstack_python_face_register_recognize_list_delete(core: Core) -> None:
    server = TestServer(create_app(core, DEEPSTACK), host="127.0.0.1")
    await server.start_server()
    try:
        port = server.port
        assert port is not None
        client = DeepstackFace(ip="127.0.0.1", port=port, timeout=60)

        def session() -> dict[str, object]:
            out: dict[str, object] = {}
            out["register"] = client.register("obama", image_bytes("faces/train_obama_obama.jpg"))
            out["again"] = client.register("obama", image_bytes("faces/train_obama_obama2.jpg"))
            out["recognize"] = client.recognize(image_bytes("faces/test_obama1.jpg"))
            out["stranger"] = client.recognize(image_bytes("faces/train_rose_leslie_img2.jpg"))
            out["detect"] = client.detect(image_bytes("face.jpg"))
            out["list"] = client.get_registered_faces()
            try:
                client.register("rex", image_bytes("pets.jpg"))
            except DeepstackException as exc:
                out["no_face"] = str(exc)
            resp = requests.post(f"http://127.0.0.1:{port}/v1/vision/face/delete", data={"userid": "obama"},
                                 timeout=30)
            out["delete"] = (resp.status_code, resp.json())
            out["after"] = client.get_registered_faces()
            out["objects"] = DeepstackObject(ip="127.0.0.1", port=port, timeout=60).detect(image_bytes("pets.jpg"))
            return out

        out = await asyncio.to_thread(session)
    finally:
        await server.close()

    assert out["register"] == "face added"
    assert out["again"] == "face updated"
    recognized = out["recognize"]
    assert isinstance(recognized, list) and [p["userid"] for p in recognized] == ["obama"]
    stranger = out["stranger"]
    assert isinstance(stranger, list) and [p["userid"] for p in stranger] == ["unknown"]
    detected = out["detect"]
    assert isinstance(detected, list) and len(detected) == 4
    assert out["list"] == ["obama"]
    # DeepStack semantics: the client sees the real status code for a photo without a face.
    assert "400" in str(out.get("no_face"))
    assert out["delete"][0] == 200 and out["delete"][1]["success"] is True  # type: ignore[index]
    assert out["after"] == []
    objects = out["objects"]
    assert isinstance(objects, list) and objects[0]["label"] == "dog"

