"""Error answers over HTTP on both listeners and in every dialect: 500 when the task raises, 503 when the queue is
full, 401/403 for keys and disabled routes, 400-class for a malformed multipart body — each with a Content-Length.

The 500 and 503 come from a real raising / really blocked inference: a custom .hef model on the Hailo (no CPU twin,
so nothing fails over) with hailo_platform stood in at the vendor seam (tests/helpers/standins.py).
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from perch.daemon.accel_models import import_hef
from perch.daemon.api.common import CODEPROJECT, DEEPSTACK
from perch.daemon.app import create_app
from perch.daemon.config import Settings
from perch.daemon.core import Core
from perch.daemon.manifest import load_manifest

from conftest import MODELS, REPO, form, image_bytes, tuned
from helpers import standins

pytestmark = pytest.mark.asyncio(loop_scope="module")

PHOTO = image_bytes("pets.jpg")


async def answer(resp: ClientResponse) -> tuple[int, dict[str, Any]]:
    assert resp.headers.get("Content-Length"), f"{resp.url.path}: error answers carry a Content-Length"
    assert "chunked" not in resp.headers.get("Transfer-Encoding", "")
    return resp.status, dict(await resp.json())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hailo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[TestClient, TestClient, Any, Core]]:
    tmp = tmp_path_factory.mktemp("hailo")
    settings = Settings(model_dir=MODELS, state_dir=tmp / "s", cache_dir=tmp / "c", legacy_port=0,
                        cpu={"workers": 1}, queue={"max_depth": 1, "timeout_s": 20},
                        hardware_root=REPO / "tests/fixtures/boards/pi5-hailo8l")
    hef, labels = tmp / "gatecam.hef", tmp / "labels.txt"
    hef.write_bytes(b"stand-in")
    labels.write_text("\n".join(load_manifest().label_sets["coco80"]))
    import_hef(settings, load_manifest(), hef, labels, "yolov8")
    mp = pytest.MonkeyPatch()
    try:
        with standins.hailo_platform(mp, {"gatecam.hef": MODELS / "edgetpu/yolov8n_full_integer_quant_cpu_twin.tflite"}
                                     ) as faults:
            core = Core(settings)
            await core.start()
            try:
                async with TestClient(TestServer(create_app(core, CODEPROJECT))) as cp, \
                        TestClient(TestServer(create_app(core, DEEPSTACK))) as ds:
                    body = (await answer(await cp.post("/v1/vision/custom/gatecam", data=form(PHOTO))))[1]
                    assert body["inferenceDevice"] == "NPU" and body["count"] == 2  # the two dogs, on the "Hailo"
                    yield cp, ds, faults, core
            finally:
                await core.close()
    finally:
        mp.undo()


def requests(client: TestClient) -> dict[str, Any]:
    """One detection request per dialect, all to the custom model (name -> coroutine factory)."""
    b64 = base64.b64encode(PHOTO).decode()
    return {
        "codeproject": lambda: client.post("/v1/vision/custom/gatecam", data=form(PHOTO)),
        "ultralytics": lambda: client.post("/v1/predict/gatecam", data=form(PHOTO)),
        "roboflow": lambda: client.post("/gatecam/1", data=b64,
                                        headers={"Content-Type": "application/x-www-form-urlencoded"}),
    }


async def test_500_when_the_task_raises(hailo: tuple[TestClient, TestClient, Any, Core]) -> None:
    cp, ds, faults, _ = hailo
    faults.error = "HAILO_TIMEOUT (injected)"
    try:
        status, body = await answer(await cp.post("/v1/vision/custom/gatecam", data=form(PHOTO)))
        assert (status, body["success"], body["code"]) == (200, False, 500) and "HAILO_TIMEOUT" in body["error"]
        for name, send in requests(ds).items():
            status, body = await answer(await send())
            assert status == 500, (name, body)
        status, body = await answer(await ds.post("/v1/vision/custom/gatecam", data=form(PHOTO)))
        assert status == 500 and body["success"] is False
    finally:
        faults.error = None
    assert (await answer(await ds.post("/v1/vision/custom/gatecam", data=form(PHOTO))))[0] == 200


async def test_503_when_the_queue_is_full(hailo: tuple[TestClient, TestClient, Any, Core]) -> None:
    cp, ds, faults, core = hailo
    release = threading.Event()
    faults.blocked.clear()
    faults.hold = release
    pool = core.registry.loaded["gatecam"].pool
    running = asyncio.ensure_future(ds.post("/v1/vision/custom/gatecam", data=form(PHOTO)))
    try:
        assert await asyncio.to_thread(faults.blocked.wait, 10)  # the only worker is stuck in the "Hailo"
        queued = asyncio.ensure_future(ds.post("/v1/vision/custom/gatecam", data=form(PHOTO)))
        for _ in range(200):
            if pool.depth == 1:
                break
            await asyncio.sleep(0.02)
        assert pool.depth == 1  # the queue (max_depth 1) is full now
        resp = await cp.post("/v1/vision/custom/gatecam", data=form(PHOTO))
        status, body = await answer(resp)
        assert (status, body["code"]) == (200, 503) and resp.headers["Retry-After"]
        for name, send in requests(ds).items():
            resp = await send()
            status, body = await answer(resp)
            assert status == 503, (name, body)
        resp = await ds.post("/v1/vision/detection", data=form(PHOTO))  # the default model has its own queue
        assert resp.status == 200
    finally:
        faults.hold = None
        release.set()
    # The accepted requests are still answered.
    assert (await running).status == 200 and (await queued).status == 200


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def keyed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[TestClient, TestClient]]:
    tmp = tmp_path_factory.mktemp("keyed")
    settings = tuned(Settings(model_dir=MODELS, state_dir=tmp / "s", cache_dir=tmp / "c", legacy_port=0,
                              cpu={"workers": 1}), auth={"api_keys": ["sesame-1234"]})
    core = Core(settings)
    await core.start()
    try:
        async with TestClient(TestServer(create_app(core, CODEPROJECT))) as cp, \
                TestClient(TestServer(create_app(core, DEEPSTACK))) as ds:
            yield cp, ds
    finally:
        await core.close()


async def test_401_and_403(keyed: tuple[TestClient, TestClient]) -> None:
    cp, ds = keyed
    status, body = await answer(await cp.post("/v1/vision/detection", data=form(PHOTO)))
    assert (status, body["code"]) == (200, 401)
    assert (await answer(await ds.post("/v1/vision/detection", data=form(PHOTO))))[0] == 401
    assert (await answer(await ds.post("/v1/vision/detection", data=form(PHOTO, api_key="wrong"))))[0] == 401
    assert (await answer(await ds.post("/v1/predict/default", data=form(PHOTO))))[0] == 401
    assert (await answer(await ds.post("/recog", data=form(PHOTO, field="file"))))[0] == 401
    status, body = await answer(await ds.post("/default/1?api_key=wrong", data=base64.b64encode(PHOTO)))
    assert status == 403 and body == {"Message": "User is not authorized to access this resource"}
    # A key that works; then the disabled training routes: 403 on DeepStack, code 403 on CodeProject.
    assert (await answer(await ds.post("/v1/vision/detection", data=form(PHOTO, api_key="sesame-1234"))))[0] == 200
    assert (await answer(await ds.post("/v1/train/model", data=form(api_key="sesame-1234"))))[0] == 403
    status, body = await answer(await cp.post("/v1/train/model", data=form(api_key="sesame-1234")))
    assert (status, body["code"]) == (200, 403)


# A part with no headers at all: aiohttp's part parser raises InvalidHeader ("hello" is not a header line).
MALFORMED = b"--XX\r\nhello\r\n--XX--\r\n"
ROUTES = ["/v1/vision/detection", "/v1/vision/custom/ssd_mobilenet_v1", "/v1/vision/face", "/v1/vision/face/",
          "/v1/vision/face/register", "/v1/vision/face/recognize", "/v1/vision/face/match", "/v1/vision/scene",
          "/v1/vision/alpr", "/v1/image/alpr", "/v1/image/removebackground", "/v1/image/superresolution",
          "/v1/text/sentiment", "/v1/settings/ObjectDetectionPerch", "/v1/predict/default", "/default/1", "/recog"]


@pytest.mark.parametrize("path", ROUTES)
async def test_malformed_multipart_is_refused_in_every_dialect(keyed: tuple[TestClient, TestClient], path: str,
                                                               hailo: Any) -> None:
    cp, ds, *_ = hailo  # no keys there: the body itself is what gets refused
    headers = {"Content-Type": "multipart/form-data; boundary=XX"}
    for client in (cp, ds):
        status, body = await answer(await client.post(path, data=MALFORMED, headers=headers))
        code = body.get("code", status) if client is cp else status
        assert 400 <= code < 500, (path, status, body)
        assert 400 <= status < 500 or (client is cp and status == 200), (path, status, body)
    # With keys on, a body that cannot be read carries no key: refused too, never a 500.
    status, body = await answer(await keyed[1].post(path, data=MALFORMED, headers=headers))
    assert 400 <= status < 500, (path, status, body)
