"""Status routes, and a daemon that starts without its model: it serves status and says why."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import FormData
from aiohttp.test_utils import TestClient

from perch.daemon.api.common import CODEPROJECT, DEEPSTACK
from perch.daemon.app import create_app
from perch.daemon.config import Settings
from perch.daemon.core import Core

from conftest import MODELS, image_bytes

ClientFactory = Callable[..., Awaitable[TestClient]]


async def test_ping_version_status(aiohttp_client: ClientFactory, core: Core) -> None:
    client = await aiohttp_client(create_app(core, CODEPROJECT))
    for path in ("/v1/status/ping", "/v1/server/status/ping"):
        resp = await client.get(path)
        assert resp.status == 200 and (await resp.json())["success"] is True
    version = await (await client.get("/v1/status/version")).json()
    assert version["success"] and {"major", "minor", "patch"} <= version["version"].keys()
    status = await (await client.get("/v1/status/system-status")).json()
    assert status["success"]
    kinds = {a["kind"] for a in status["hardware"]["accelerators"]}
    assert kinds == {"rknn", "edgetpu", "tensorrt", "hailo", "cpu"}
    model = next(m for m in status["models"] if m["id"] == "ssd_mobilenet_v1")
    assert model["inferenceDevice"] == "CPU" and model["workers"] == 2 and model["queueDepth"] == 0
    fd = FormData()
    fd.add_field("image", image_bytes("pets.jpg"), filename="p.jpg")
    await client.post("/v1/vision/detection", data=fd)
    status = await (await client.get("/v1/status/system-status")).json()
    model = next(m for m in status["models"] if m["id"] == "ssd_mobilenet_v1")
    assert model["processed"] >= 1 and model["averageInferenceMs"] > 0
    modules = await (await client.get("/v1/module/list/status")).json()
    assert modules["success"] and modules["statuses"][0]["status"] == "Started"
    assert modules["statuses"][0]["inferenceDevice"] == "CPU"


def _copy_models(dst: Path) -> Path:
    shutil.copytree(MODELS / "detection", dst / "detection")
    return dst


async def test_missing_model_keeps_serving_status(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path / "empty", state_dir=tmp_path / "s", legacy_port=0)
    core = Core(settings)
    await core.start()
    try:
        client = await aiohttp_client(create_app(core, CODEPROJECT))
        assert (await client.get("/v1/status/ping")).status == 200
        status = await (await client.get("/v1/status/system-status")).json()
        entry = next(m for m in status["models"] if m["id"] == "ssd_mobilenet_v1")
        assert entry["available"] is False and "perchd models pull" in entry["reason"]
        modules = await (await client.get("/v1/module/list/status")).json()
        assert modules["statuses"][0]["status"] == "NotAvailable"
        fd = FormData()
        fd.add_field("image", image_bytes("pets.jpg"), filename="a.jpg")
        body = await (await client.post("/v1/vision/detection", data=fd)).json()
        assert body["success"] is False and body["code"] == 500 and "not found" in body["error"]
    finally:
        await core.close()


async def test_corrupt_model_names_file_and_hash(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    models = _copy_models(tmp_path / "models")
    target = models / "detection" / "ssd_mobilenet_v1_coco_quant_postprocess.tflite"
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[1000] ^= 0xFF
    target.write_bytes(bytes(data))
    core = Core(Settings(model_dir=models, state_dir=tmp_path / "s", cache_dir=tmp_path / "c", legacy_port=0,
                         detection={"model": "ssd_mobilenet_v1"}))
    await core.start()
    try:
        client = await aiohttp_client(create_app(core, DEEPSTACK))
        status = await (await client.get("/v1/status/system-status")).json()
        reason = next(m for m in status["models"] if m["id"] == "ssd_mobilenet_v1")["reason"]
        assert "ssd_mobilenet_v1_coco_quant_postprocess.tflite" in reason
        assert "e4b118e5e4531945de2e659742c7c590f7536f8d0ed26d135abcfe83b4779d13" in reason
        fd = FormData()
        fd.add_field("image", image_bytes("pets.jpg"), filename="a.jpg")
        resp = await client.post("/v1/vision/detection", data=fd)
        assert resp.status == 500 and "corrupt" in (await resp.json())["error"]
    finally:
        await core.close()
