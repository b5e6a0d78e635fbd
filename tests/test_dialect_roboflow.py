"""Roboflow hosted dialect: the seed 003 REST examples (curl with base64, image URL; the axios/Kotlin/Go/… request
shapes) and Roboflow's own inference-sdk client pointed at the daemon."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from dialect_clients import curl, curl_json, requests_call
from PIL import Image

from perch.daemon.api.common import CODEPROJECT
from perch.daemon.app import create_app
from perch.daemon.config import Settings

from conftest import IMAGES, ClientFactory, image_bytes, running, tuned
from helpers.client_packages import install_client

# Roboflow's client, installed without its dependency tree: its pins (opencv-python, numpy<2.4, supervision's
# matplotlib) would replace the project's OpenCV and numpy. These are the modules it imports at run time.
SDK_PACKAGES = ["inference-sdk==1.8.3", "supervision==0.30.9", "dataclasses-json>=0.6,<0.7", "marshmallow<4",
                "typing-inspect", "mypy-extensions", "tldextract>=5.1.2,<5.2", "requests-file", "filelock",
                "backoff>=2.2,<2.3", "py-cpuinfo", "pydeprecate<0.14", "defusedxml", "scipy"]


@pytest.fixture
async def fetching_client(aiohttp_client: ClientFactory, settings: Settings) -> AsyncIterator[TestClient]:
    async with running(tuned(settings, fetch={"enabled": True, "allow": ["127.0.0.1"]})) as core:
        yield await aiohttp_client(create_app(core, CODEPROJECT))


def _labels(body: dict[str, Any]) -> list[str]:
    return [p["class"] for p in body["predictions"]]


def _check(body: dict[str, Any], width: int = 768, height: int = 576) -> None:
    assert body["image"] == {"width": width, "height": height}
    for p in body["predictions"]:
        assert {"x", "y", "width", "height", "class", "confidence"} <= set(p)
        # x, y are the box centre: the box lies inside the image.
        assert p["x"] - p["width"] / 2 >= 0 and p["x"] + p["width"] / 2 <= width
        assert p["y"] - p["height"] / 2 >= 0 and p["y"] + p["height"] / 2 <= height


async def test_seed_curl_base64_pipe(cp: TestClient) -> None:
    # base64 YOUR_IMAGE.jpg | curl -d @- "https://detect.roboflow.com/your-model/42?api_key=YOUR_KEY"
    url = str(cp.make_url("/default/42")) + "?api_key=YOUR_KEY"
    proc = await asyncio.create_subprocess_shell(
        f"base64 {IMAGES / 'dog_bicycle_car.jpg'} | curl -sS -d @- '{url}'",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    body = json.loads(out)
    _check(body)
    assert {"dog", "bicycle", "car"} <= set(_labels(body))
    assert all(p["confidence"] >= 0.4 for p in body["predictions"]), "default confidence is 40"
    dog = next(p for p in body["predictions"] if p["class"] == "dog")
    assert dog["x"] < 300 and dog["y"] > 300


async def test_seed_curl_image_url(fetching_client: TestClient, image_host: TestServer) -> None:
    image_url = str(image_host.make_url("/pets.jpg"))
    url = str(fetching_client.make_url("/ssd_mobilenet_v1/42")) + f"?api_key=YOUR_KEY&image={quote(image_url, safe='')}"
    status, body = await curl_json("-X", "POST", url)
    assert status == 200
    _check(body, *Image.open(IMAGES / "pets.jpg").size)
    assert _labels(body)[:2] == ["dog", "dog"]


async def test_url_needs_fetch_enabled(cp: TestClient, image_host: TestServer) -> None:
    url = f"/default/1?image={quote(str(image_host.make_url('/pets.jpg')), safe='')}"
    resp = await cp.post(url)
    assert resp.status == 403 and "disabled" in (await resp.json())["message"]


async def test_axios_kotlin_go_request_shapes(cp: TestClient) -> None:
    encoded = base64.b64encode(image_bytes("pets.jpg")).decode()
    url = str(cp.make_url("/default/3"))
    # axios / Kotlin / Java / Ruby / PHP / .NET: base64 body, urlencoded content type, name=YOUR_IMAGE.jpg.
    resp = await requests_call("POST", url, params={"api_key": "YOUR_KEY", "name": "YOUR_IMAGE.jpg"}, data=encoded,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 200 and _labels(resp.json())[:2] == ["dog", "dog"]
    # Go: no content type, Accept: application/json. Ruby's Base64.encode64 wraps lines every 60 characters.
    wrapped = "\n".join(encoded[i:i + 60] for i in range(0, len(encoded), 60)) + "\n"
    for body, headers in ((encoded, {"Accept": "application/json"}), (wrapped, {})):
        resp = await requests_call("POST", url + "?api_key=YOUR_KEY", data=body, headers=headers)
        assert resp.status_code == 200 and _labels(resp.json())[:2] == ["dog", "dog"]
    # A data: URL, as browsers' FileReader produce.
    resp = await cp.post("/default/3", data="data:image/jpeg;base64," + encoded)
    assert resp.status == 200 and _labels(await resp.json())[:2] == ["dog", "dog"]


async def test_query_options(cp: TestClient) -> None:
    encoded = base64.b64encode(image_bytes("dog_bicycle_car.jpg")).decode()
    body = await (await cp.post("/default/1?confidence=70", data=encoded)).json()
    assert _labels(body) == ["bicycle"]
    body = await (await cp.post("/yolox_nano/1?classes=dog,car&confidence=30", data=encoded)).json()
    assert set(_labels(body)) == {"dog", "car"}
    many = await (await cp.post("/yolox_nano/1?confidence=5&overlap=95", data=encoded)).json()
    few = await (await cp.post("/yolox_nano/1?confidence=5&overlap=0", data=encoded)).json()
    assert len(few["predictions"]) < len(many["predictions"])
    # Fractions (what inference-sdk sends) mean the same as percentages.
    frac = await (await cp.post("/default/1?confidence=0.7", data=encoded)).json()
    assert _labels(frac) == ["bicycle"]


async def test_format_image_and_image_and_json(cp: TestClient) -> None:
    encoded = base64.b64encode(image_bytes("pets.jpg")).decode()
    resp = await cp.post("/default/1?format=image&stroke=3&labels=true", data=encoded)
    assert resp.status == 200 and resp.content_type == "image/jpeg"
    jpeg = await resp.read()
    original = Image.open(IMAGES / "pets.jpg")
    drawn = Image.open(io.BytesIO(jpeg))
    assert drawn.size == original.size and drawn.format == "JPEG"
    assert drawn.convert("RGB").tobytes() != original.convert("RGB").tobytes()
    body = await (await cp.post("/default/1?format=image_and_json", data=encoded)).json()
    assert _labels(body)[:2] == ["dog", "dog"]
    assert Image.open(io.BytesIO(base64.b64decode(body["visualization"]))).size == original.size


async def test_errors(cp: TestClient) -> None:
    resp = await cp.post("/default/1", data="")
    assert resp.status == 400 and "image" in (await resp.json())["message"]
    resp = await cp.post("/default/1", data="%%%not base64%%%")
    assert resp.status == 400
    resp = await cp.post("/default/1", data=base64.b64encode(b"plain text, not a picture").decode())
    assert resp.status == 400 and "image" in (await resp.json())["message"]
    resp = await cp.post("/no-such-model/1", data=base64.b64encode(image_bytes("pets.jpg")).decode())
    assert resp.status == 404
    resp = await cp.post("/default/0", data=base64.b64encode(image_bytes("pets.jpg")).decode())
    assert resp.status == 404
    for query in ("confidence=150", "overlap=-1", "format=png", "stroke=0"):
        resp = await cp.post(f"/default/1?{query}", data=base64.b64encode(image_bytes("pets.jpg")).decode())
        assert resp.status == 400, query
    # Paths that only look like /<dataset>/<version> are not swallowed: other routes still answer.
    status, _, _ = await curl(str(cp.make_url("/v1/status/ping")))
    assert status == 200


# ---- Roboflow's inference-sdk ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def inference_sdk_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_client(tmp_path_factory.mktemp("inference-sdk"), "inference-sdk", SDK_PACKAGES)


SDK_SCRIPT = """
import json, sys
sys.path.append(sys.argv[1])  # after the project's own packages: its numpy and OpenCV stay in charge
from inference_sdk import InferenceConfiguration, InferenceHTTPClient

client = InferenceHTTPClient(api_url=sys.argv[2], api_key=sys.argv[3])
client.select_api_v0()  # the hosted REST API (detect.roboflow.com) that this dialect speaks
client.configure(InferenceConfiguration(confidence_threshold=0.5))
out = {"result": client.infer(sys.argv[4], model_id="default/1")}
try:
    InferenceHTTPClient(api_url=sys.argv[2], api_key="wrong").select_api_v0().infer(sys.argv[4], model_id="default/1")
except Exception as exc:
    out["wrong_key"] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


async def test_inference_sdk_client(inference_sdk_path: Path, aiohttp_client: ClientFactory,
                                    settings: Settings) -> None:
    async with running(tuned(settings, auth={"api_keys": ["rf-secret"]})) as core:
        client = await aiohttp_client(create_app(core, CODEPROJECT))
        api_url = str(client.make_url("")).rstrip("/")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SDK_SCRIPT, str(inference_sdk_path), api_url, "rf-secret",
            str(IMAGES / "dog_bicycle_car.jpg"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "INFERENCE_WARNINGS_DISABLED": "true"})
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()[-3000:]
        answer = json.loads(out.decode().strip().splitlines()[-1])
    result = answer["result"]
    _check(result)
    assert {"dog", "bicycle", "car"} <= set(_labels(result))
    assert all(p["confidence"] >= 0.5 for p in result["predictions"])
    assert "403" in answer["wrong_key"] or "not authorized" in answer["wrong_key"]
