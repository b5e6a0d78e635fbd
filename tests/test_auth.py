"""API keys across dialects: off by default, and once configured each dialect refuses in its own way; a real
DeepStack client sends its key; secrets never reach the log."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from dialect_clients import curl_json

from perch.daemon.api.common import CODEPROJECT
from perch.daemon.app import create_app
from perch.daemon.config import Settings
from perch.daemon.core import Core

from conftest import IMAGES, ClientFactory, core_settings, image_bytes, running, tuned

KEY = "k3y-Sw0rdfish-0123456789"
OTHER_KEY = "second-key-for-the-garage"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Every daemon here has two API keys, except the one test_off_by_default starts."""
    return tuned(settings, auth={"api_keys": [KEY, OTHER_KEY]})


def _image_form(field: str = "image", **fields: str) -> FormData:
    fd = FormData()
    for key, value in fields.items():
        fd.add_field(key, value)
    fd.add_field(field, image_bytes("pets.jpg"), filename="pets.jpg", content_type="image/jpeg")
    return fd


async def test_off_by_default(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    async with running(core_settings(tmp_path)) as core:
        client = await aiohttp_client(create_app(core, CODEPROJECT))
        body = await (await client.post("/v1/vision/detection", data=_image_form())).json()
        assert body["success"] is True and body["predictions"][0]["label"] == "dog"
        resp = await client.post("/v1/predict/default", data=_image_form())
        assert resp.status == 200
        resp = await client.post("/default/1", data=base64.b64encode(image_bytes("pets.jpg")).decode())
        assert resp.status == 200


async def test_codeproject_listener(cp: TestClient) -> None:
    body = await (await cp.post("/v1/vision/detection", data=_image_form())).json()
    assert body["success"] is False and body["code"] == 401
    body = await (await cp.post("/v1/vision/detection", data=_image_form(api_key="wrong"))).json()
    assert body["success"] is False and body["code"] == 401
    # The key in the multipart form, before or after the image: the handler still reads the whole form.
    body = await (await cp.post("/v1/vision/detection", data=_image_form(api_key=KEY))).json()
    assert body["success"] is True and body["predictions"][0]["label"] == "dog"
    fd = FormData()
    fd.add_field("image", image_bytes("pets.jpg"), filename="pets.jpg", content_type="image/jpeg")
    fd.add_field("min_confidence", "0.8")
    fd.add_field("api_key", OTHER_KEY)
    body = await (await cp.post("/v1/vision/detection", data=fd)).json()
    assert body["success"] is True and [p["label"] for p in body["predictions"]] == ["dog"]
    body = await (await cp.post(f"/v1/vision/detection?api_key={KEY}", data=_image_form())).json()
    assert body["success"] is True
    # Urlencoded body with the key: authenticated, then refused for the missing image (400, not 401).
    body = await (await cp.post("/v1/vision/detection", data={"api_key": KEY, "min_confidence": "0.5"})).json()
    assert body["success"] is False and body["code"] == 400


async def test_deepstack_listener_and_real_client(ds: TestClient) -> None:
    resp = await ds.post("/v1/vision/detection", data=_image_form(api_key="wrong"))
    assert resp.status == 401 and (await resp.json())["success"] is False
    from deepstack.core import DeepstackException, DeepstackObject

    port = ds.server.port
    assert port is not None
    good = DeepstackObject(ip="127.0.0.1", port=port, api_key=KEY, min_confidence=0.5)
    predictions = await asyncio.to_thread(good.detect, image_bytes("pets.jpg"))
    assert [p["label"] for p in predictions][:2] == ["dog", "dog"]
    bad = DeepstackObject(ip="127.0.0.1", port=port, api_key="nope")
    with pytest.raises(DeepstackException, match="401"):
        await asyncio.to_thread(bad.detect, image_bytes("pets.jpg"))


async def test_each_dialect_refuses_its_own_way(cp: TestClient) -> None:
    # Ultralytics: header x-api-key.
    resp = await cp.post("/v1/predict/default", data=_image_form(), headers={"x-api-key": "wrong"})
    assert resp.status == 401 and (await resp.json())["success"] is False
    resp = await cp.post("/v1/predict/default", data=_image_form(), headers={"x-api-key": KEY})
    assert resp.status == 200 and (await resp.json())["data"][0]["name"] == "dog"
    # Roboflow: query api_key, 403 with the hosted API's exact body.
    encoded = base64.b64encode(image_bytes("pets.jpg")).decode()
    for query in ("", "?api_key=wrong"):
        resp = await cp.post(f"/default/1{query}", data=encoded)
        assert resp.status == 403
        assert await resp.json() == {"Message": "User is not authorized to access this resource"}
    resp = await cp.post(f"/default/1?api_key={KEY}", data=encoded)
    assert resp.status == 200 and (await resp.json())["predictions"][0]["class"] == "dog"
    # RAYPACK: form field apikey, refused in the RAYPACK container.
    resp = await cp.post("/recog", data=_image_form("file", apikey="wrong", model="1"))
    body = await resp.json()
    assert resp.status == 401 and body["name"] == "Raypack_AI_Filecontainer" and "error" in body
    status, body = await curl_json("-X", "POST", "-F", f"apikey={KEY}", "-F", "threshold=0.5",
                                   "-F", f"file=@{IMAGES / 'pets.jpg'}", "-F", "model=1",
                                   str(cp.make_url("/recog")))
    assert status == 200 and body["results"]["tags"][0]["name"] == "dog"
    resp = await cp.post("/getmodels", data={"apikey": KEY})
    assert resp.status == 200


async def test_bearer_everywhere_and_open_routes(cp: TestClient) -> None:
    bearer = {"Authorization": f"Bearer {KEY}"}
    body = await (await cp.post("/v1/vision/detection", data=_image_form(), headers=bearer)).json()
    assert body["success"] is True
    assert (await cp.post("/v1/predict/default", data=_image_form(), headers=bearer)).status == 200
    encoded = base64.b64encode(image_bytes("pets.jpg")).decode()
    assert (await cp.post("/default/1", data=encoded, headers=bearer)).status == 200
    assert (await cp.post("/recog", data=_image_form("file", model="1"), headers=bearer)).status == 200
    # Health checks stay open; other status routes want the key; unknown routes still 404.
    assert (await cp.get("/v1/status/ping")).status == 200
    body = await (await cp.get("/v1/status/version")).json()
    assert body["success"] is False and body["code"] == 401
    assert (await (await cp.get("/v1/status/version", headers=bearer)).json())["success"] is True
    assert (await cp.post("/v1/nothing/here")).status == 404


async def test_form_key_on_other_codeproject_routes(cp: TestClient) -> None:
    # Several files and the key in one multipart body (the face route reads every file of the replayed body).
    fd = FormData()
    fd.add_field("userid", "grace")
    fd.add_field("api_key", KEY)
    fd.add_field("image1", image_bytes("grace_hopper.bmp"), filename="g1.bmp")
    fd.add_field("image2", image_bytes("grace_hopper.bmp"), filename="g2.bmp")
    body = await (await cp.post("/v1/vision/face/register", data=fd)).json()
    assert body["success"] is True and body["faces"] == 2
    body = await (await cp.post("/v1/vision/face/list", data={"api_key": "wrong"})).json()
    assert body["success"] is False and body["code"] == 401
    body = await (await cp.post("/v1/vision/face/list", headers={"Authorization": f"Bearer {KEY}"})).json()
    assert body["success"] is True and "grace" in body["faces"]


async def test_secrets_never_logged(aiohttp_client: ClientFactory, core: Core,
                                    caplog: pytest.LogCaptureFixture) -> None:
    # As run_daemon serves: no aiohttp access log (it would print query strings), only perch's own line.
    server = TestServer(create_app(core, CODEPROJECT))
    await server.start_server(access_log=None)
    cp = await aiohttp_client(server)
    caplog.set_level(logging.DEBUG)
    await cp.post(f"/v1/vision/detection?api_key={KEY}", data=_image_form())
    await cp.post("/v1/vision/detection", data=_image_form(api_key=OTHER_KEY))
    await cp.post("/v1/predict/default", data=_image_form(), headers={"x-api-key": KEY})
    await cp.post(f"/default/1?api_key={KEY}", data=base64.b64encode(image_bytes("pets.jpg")).decode())
    await cp.post("/recog", data=_image_form("file", apikey=KEY, model="1"))
    await cp.post("/v1/vision/detection", data=_image_form(api_key="wrong-secret-attempt"))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "/v1/vision/detection" in text, "the request log line is there"
    for secret in (KEY, OTHER_KEY, "wrong-secret-attempt"):
        assert secret not in text


def test_keys_compared_as_digests() -> None:
    from perch.daemon.accounts import Accounts
    from perch.daemon.api.auth import Gate

    gate = Gate(["abc", "longer-key"], Accounts.__new__(Accounts))
    assert gate.is_key("abc") and gate.is_key("longer-key")
    assert not gate.is_key("ab") and not gate.is_key("abcd") and not gate.is_key("")
    assert all(len(k) == 32 for k in gate.keys), "fixed-length digests: no length or prefix timing"
