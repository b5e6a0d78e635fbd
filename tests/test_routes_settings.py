"""Settings (applied live, persisted), server log, update check and the training stubs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from perch.daemon.config import Settings
from perch.daemon.core import Core
from perch.daemon.logs import LOG_RING
from perch.daemon.version import version_info

from conftest import form, image_bytes, post_json

DETECTION = "/v1/settings/ObjectDetectionPerch"


async def detect(client: TestClient) -> dict[str, Any]:
    body = await post_json(client, "/v1/vision/detection", form(image_bytes("dog_bicycle_car.jpg"), filename="x.jpg"))
    assert body["success"], body
    return body


async def set_(client: TestClient, path: str, name: str, value: str) -> dict[str, Any]:
    return await post_json(client, path, {"name": name, "value": value})


async def test_get_settings(cp: TestClient) -> None:
    body = await (await cp.get(DETECTION)).json()
    assert body["success"] and body["settings"] == {"min_confidence": 0.4, "model": "auto"}
    assert body["environmentVariables"]["PERCHD__DETECTION__MIN_CONFIDENCE"] == "0.4"
    body = await (await cp.get("/v1/settings/FaceProcessing")).json()
    assert body["settings"] == {"min_confidence": 0.67}


async def test_min_confidence_applies_at_once_and_persists(cp: TestClient, core: Core, settings: Settings) -> None:
    assert {"bicycle", "car", "dog"} <= {p["label"] for p in (await detect(cp))["predictions"]}
    body = await set_(cp, DETECTION, "MIN_CONFIDENCE", "0.7")
    assert body["success"] and body["settings"]["min_confidence"] == 0.7
    # No restart, no min_confidence in the request: the new default applies.
    assert [p["label"] for p in (await detect(cp))["predictions"]] == ["bicycle"]
    assert (await set_(cp, "/v1/settings/faceprocessing", "min_confidence", "0.8"))["success"]
    # A fresh daemon on the same state directory starts with the saved values.
    fresh = Core(Settings(model_dir=settings.model_dir, state_dir=settings.state_dir,
                          cache_dir=settings.cache_dir, legacy_port=0))
    await fresh.start()
    try:
        assert fresh.settings.detection.min_confidence == 0.7
        assert fresh.settings.faces.min_confidence == 0.8
    finally:
        await fresh.close()


async def test_model_swap_keeps_serving(cp: TestClient, core: Core) -> None:
    # SSD MobileNet ranks the bicycle first in this photo, YOLOX-Nano the dog.
    assert (await detect(cp))["predictions"][0]["label"] == "bicycle"
    stop = asyncio.Event()
    served: list[dict[str, Any]] = []

    async def traffic() -> None:
        while not stop.is_set():
            served.append(await detect(cp))

    runners = [asyncio.create_task(traffic()) for _ in range(4)]
    await asyncio.sleep(0.2)
    body = await set_(cp, DETECTION, "model", "yolox_nano")
    assert body["success"] and body["settings"]["model"] == "yolox_nano"
    await asyncio.sleep(0.2)
    body = await set_(cp, DETECTION, "model", "auto")
    await asyncio.sleep(0.2)
    assert (await set_(cp, DETECTION, "model", "yolox_nano"))["success"]
    stop.set()
    await asyncio.gather(*runners)
    # detect() asserted success for every request made during the swaps.
    assert len(served) > 8
    assert (await detect(cp))["predictions"][0]["label"] == "dog"
    assert {m["id"] for m in core.registry.status()} >= {"ssd_mobilenet_v1", "yolox_nano"}


@pytest.mark.parametrize(("path", "name", "value", "needle"), [
    (DETECTION, "model", "no_such_model", "not a detection model"),
    (DETECTION, "model", "yunet_face", "not a detection model"),
    (DETECTION, "min_confidence", "1.5", "min_confidence"),
    (DETECTION, "min_confidence", "", "value"),
    (DETECTION, "threads", "4", "not a setting"),
    (DETECTION, "", "1", "name"),
    ("/v1/settings/NoSuchModule", "model", "x", "unknown module"),
])
async def test_bad_settings_change_nothing(cp: TestClient, ds: TestClient, core: Core, path: str, name: str,
                                           value: str, needle: str) -> None:
    body = await set_(cp, path, name, value)
    assert body["success"] is False and body["code"] == 400 and needle in body["error"], body
    assert core.settings.detection.model == "auto" and core.settings.detection.min_confidence == 0.4
    assert core.store.settings() == {}
    resp = await ds.post(path, data={"name": name, "value": value})
    assert resp.status == 400


async def test_log_list(cp: TestClient) -> None:
    root = logging.getLogger()
    added = LOG_RING not in root.handlers
    if added:
        root.addHandler(LOG_RING)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        log = logging.getLogger("perch.test")
        for i in range(5):
            log.info("log line %d", i)
        body = await (await cp.get("/v1/log/list?count=2")).json()
        assert body["success"] and [e["entry"] for e in body["entries"]][-1] == "log line 4"
        assert len(body["entries"]) == 2
        entry = body["entries"][0]
        assert {"id", "timestamp", "entry"} <= set(entry)
        newer = await (await cp.get(f"/v1/log/list?count=10&last_id={entry['id']}")).json()
        assert all(e["id"] > entry["id"] for e in newer["entries"]) and newer["entries"]
        bad = await (await cp.get("/v1/log/list?count=lots")).json()
        assert bad["success"] is False
    finally:
        root.setLevel(old_level)
        if added:
            root.removeHandler(LOG_RING)


async def test_update_available_is_local(cp: TestClient) -> None:
    body = await (await cp.get("/v1/status/updateavailable")).json()
    assert body["success"] and body["updateAvailable"] is False
    assert body["current"] == body["latest"] == body["version"] == version_info()


@pytest.mark.parametrize("route", ["create_dataset", "train_model", "status", "cancel", "resume_training",
                                   "model_info", "dataset_info"])
async def test_training_is_refused_with_the_way_out(cp: TestClient, ds: TestClient, route: str) -> None:
    resp = await cp.post(f"/v1/train/{route}", data={"name": "cars"})
    body = await resp.json()
    assert resp.status == 200 and body["success"] is False
    assert "training is not available on this device" in body["error"] and "perchd models import" in body["error"]
    resp = await ds.post(f"/v1/train/{route}")
    assert resp.status == 403 and (await resp.json())["success"] is False
