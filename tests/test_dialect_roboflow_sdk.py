"""Seed 003's Python example, run with Roboflow's own `roboflow` pip package against the daemon: the package reads
the management API under /roboflow (key check, workspace, project, versions), then posts the photo to the hosted
inference route. Also the management routes over plain HTTP, and how they refuse."""

from __future__ import annotations

import ast
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from perch.daemon.api.common import CODEPROJECT
from perch.daemon.api.roboflow import MAX_VERSIONS
from perch.daemon.app import create_app
from perch.daemon.config import Settings

from conftest import IMAGES, ClientFactory, running, tuned
from helpers.client_packages import install_client

KEY = "rf-secret"  # the package treats a key with no lowercase letter as a sign-up placeholder (see README)
# The package without its dependency tree (its pins would replace the project's OpenCV and numpy), plus the few
# modules it imports at run time that the project's venv lacks.
PACKAGES = ["roboflow==1.7.3", "requests-toolbelt>=1,<2", "python-dotenv>=1,<2", "filetype>=1.2,<2",
            "pillow-avif-plugin>=1.4,<2", "tqdm>=4.41"]

# The seed's example as published; the two commented lines are switched on below.
SEED = '''from roboflow import Roboflow
rf = Roboflow(api_key="API_KEY")
project = rf.workspace().project("MODEL_ENDPOINT")
model = project.version(VERSION).model
print(model.predict("your_image.jpg", confidence=40, overlap=30).json())
# model.predict("your_image.jpg", confidence=40, overlap=30).save("prediction.jpg")
# print(model.predict("URL_OF_YOUR_IMAGE", hosted=True, confidence=40, overlap=30).json())
'''

# The package appended to sys.path after the project's own packages, so the venv's numpy and OpenCV stay in charge.
RUNNER = "import runpy, sys; sys.path.append(sys.argv[1]); runpy.run_path(sys.argv[2], run_name='__main__')"


@pytest.fixture(scope="session")
def roboflow_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_client(tmp_path_factory.mktemp("roboflow-pkg"), "the roboflow package", PACKAGES)


@pytest.fixture
async def keyed(aiohttp_client: ClientFactory, settings: Settings) -> AsyncIterator[TestClient]:
    """A daemon that wants a key and may fetch images from 127.0.0.1 (the stand-in image host)."""
    async with running(tuned(settings, auth={"api_keys": [KEY]},
                             fetch={"enabled": True, "allow": ["127.0.0.1"]})) as core:
        yield await aiohttp_client(create_app(core, CODEPROJECT))


async def _run(package: Path, client: TestClient, script: str, cwd: Path) -> tuple[str, str]:
    """Run `script` with the package's base URLs pointing at the daemon; (stdout, stderr) of a clean exit."""
    path = cwd / "example.py"
    path.write_text(script)
    base = str(client.make_url("")).rstrip("/")
    env = {**os.environ, "API_URL": f"{base}/roboflow", "OBJECT_DETECTION_URL": base,
           # No user config of the package (~/.config/roboflow) can redirect it.
           "HOME": str(cwd), "ROBOFLOW_CONFIG_DIR": str(cwd / "roboflow.json")}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", RUNNER, str(package), str(path), cwd=cwd,
                                                env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode(), err.decode()


def _printed(out: str) -> list[Any]:
    """The values the script printed (print() of a dict writes its repr, not JSON)."""
    return [ast.literal_eval(line) for line in out.splitlines() if line.startswith(("{", "["))]


def _labels(answer: dict[str, Any]) -> list[str]:
    return [p["class"] for p in answer["predictions"]]


async def test_seed_python_example(roboflow_path: Path, keyed: TestClient, image_host: TestServer,
                                   tmp_path: Path) -> None:
    script = (SEED.replace("# model.predict", "model.predict").replace("# print(", "print(")
              .replace("API_KEY", KEY).replace("MODEL_ENDPOINT", "default").replace("VERSION", "42")
              .replace("your_image.jpg", str(IMAGES / "dog_bicycle_car.jpg"))
              .replace("URL_OF_YOUR_IMAGE", str(image_host.make_url("/dog_bicycle_car.jpg"))))
    out, _ = await _run(roboflow_path, keyed, script, tmp_path)
    local, hosted = _printed(out)
    for answer in (local, hosted):
        assert {"dog", "bicycle", "car"} <= set(_labels(answer))
        assert all(p["confidence"] >= 0.4 for p in answer["predictions"]), "confidence=40 is a percentage"
    dog = next(p for p in local["predictions"] if p["class"] == "dog")
    assert dog["x"] < 300 and dog["y"] > 300, "x, y are the box centre in pixels"
    assert local["image"] == {"width": "768", "height": "576"}  # the package fills these in, as strings
    assert {p["image_path"] for p in local["predictions"]} == {str(IMAGES / "dog_bicycle_car.jpg")}
    # .save() drew the boxes over the local photo.
    saved = Image.open(tmp_path / "prediction.jpg")
    original = Image.open(IMAGES / "dog_bicycle_car.jpg")
    assert saved.size == original.size
    assert saved.convert("RGB").tobytes() != original.convert("RGB").tobytes()


METADATA = '''
import json
from roboflow import Roboflow
out = {}
try:
    Roboflow(api_key="wrong")
except Exception as exc:
    out["wrong_key"] = type(exc).__name__ + ": " + str(exc)
rf = Roboflow(api_key="KEY")
project = rf.workspace().project("yolox_nano")
out["type"], out["classes"] = project.type, list(project.classes)
version = project.version(7)
out["model"] = type(version.model).__name__
for attempt in (lambda: rf.workspace().project("no-such-model"), lambda: project.version(MAX + 1)):
    try:
        attempt()
    except Exception as exc:
        out.setdefault("refused", []).append(str(exc))
print(json.dumps(out))
'''


async def test_package_metadata_and_refusals(roboflow_path: Path, keyed: TestClient, tmp_path: Path) -> None:
    script = METADATA.replace("KEY", KEY).replace("MAX", str(MAX_VERSIONS))
    out, _ = await _run(roboflow_path, keyed, script, tmp_path)
    answer = _printed(out)[-1]
    assert "not authorized" in answer["wrong_key"]
    assert answer["type"] == "object-detection"
    assert answer["classes"][:3] == ["person", "bicycle", "car"]
    assert answer["model"] == "ObjectDetectionModel"
    unknown, too_high = answer["refused"]
    assert "no-such-model" in unknown and "yolox_nano" in unknown, "the refusal lists the models there are"
    assert "not found" in too_high


async def test_management_routes(keyed: TestClient) -> None:
    resp = await keyed.post(f"/roboflow/?api_key={KEY}")
    assert resp.status == 200 and (await resp.json())["workspace"] == "perch"
    body = await (await keyed.get(f"/roboflow/perch?api_key={KEY}")).json()
    ids = [p["id"] for p in body["workspace"]["projects"]]
    assert "perch/yolox_nano" in ids and "perch/ssd_mobilenet_v1" in ids
    body = await (await keyed.get(f"/roboflow/any-workspace/default?api_key={KEY}")).json()
    assert body["project"]["id"] == "any-workspace/default"
    assert "dog" in body["project"]["classes"] and body["project"]["colors"]["dog"].startswith("#")
    assert [v["id"] for v in body["versions"][:2]] == ["any-workspace/default/1", "any-workspace/default/2"]
    assert len(body["versions"]) == MAX_VERSIONS
    # Refusals: a wrong or missing key is a 401 here (the package gives up at once on it), 403 on inference.
    for path in ("/roboflow/?api_key=wrong", "/roboflow/"):
        resp = await keyed.post(path)
        assert resp.status == 401 and "not authorized" in (await resp.json())["error"]["message"]
    resp = await keyed.get("/roboflow/perch/default?api_key=wrong")
    assert resp.status == 401
    resp = await keyed.get(f"/roboflow/perch/nope?api_key={KEY}")
    assert resp.status == 404 and "nope" in (await resp.json())["error"]["message"]
    # Read-only, and the inference catch-all is untouched: it still answers POST only.
    assert (await keyed.delete(f"/roboflow/perch/default?api_key={KEY}")).status == 405
    assert (await keyed.get(f"/default/1?api_key={KEY}")).status == 405
    assert (await keyed.post("/default/1?api_key=wrong", data="x")).status == 403
