"""GET /metrics: scraped after real requests and real inference, parsed with prometheus_client's own parser.

The camera/MQTT test runs the daemon's whole lifecycle in-process with a real Mosquitto and a real MJPEG camera.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from perch.daemon.api.common import CODEPROJECT, DEEPSTACK
from perch.daemon.app import _cameras_lifecycle, _core_lifecycle, create_app
from perch.daemon.core import Core

from conftest import IMAGES, REPO, core_settings, form, image_bytes, module_client, running, tuned
from helpers.mjpeg_server import MjpegServer
from helpers.mosquitto import Mosquitto, mosquitto_available
from helpers.rtsp_server import make_clip

pytestmark = pytest.mark.asyncio(loop_scope="module")

cp = module_client(CODEPROJECT)
ds = module_client(DEEPSTACK)


async def scrape(client: TestClient, **headers: str) -> list[Sample]:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(await resp.text()) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


async def test_requests_and_inference_move(cp: TestClient, ds: TestClient, module_core: Core) -> None:
    before = await scrape(cp)
    model = module_core.registry.default_model_id()
    count_key = {"model": model, "device": "cpu"}
    ran_before = value(before, "perch_inference_seconds_count", **count_key) or 0
    ok_before = value(before, "perch_requests_total", dialect="codeproject", route="/v1/vision/detection",
                      status="200") or 0

    photo = image_bytes("dog_bicycle_car.jpg")
    for _ in range(2):
        assert (await cp.post("/v1/vision/detection", data=form(photo))).status == 200
    # A CodeProject-style refusal is HTTP 200 on this listener: counted under the status it stands for.
    assert (await (await cp.post("/v1/vision/detection", data=form())).json())["code"] == 400
    assert (await ds.post("/v1/vision/detection", data=form())).status == 400
    assert (await cp.get("/no/such/route")).status == 404
    assert (await cp.get("/another/unknown/path")).status == 404
    assert (await cp.post("/v1/vision/custom/ssd_mobilenet_v1", data=form(photo))).status == 200
    resp = await cp.post("/default/7", data=base64.b64encode(image_bytes("pets.jpg")).decode())
    assert resp.status == 200

    after = await scrape(cp)
    requests = [s for s in after if s.name == "perch_requests_total"]
    assert value(after, "perch_requests_total", dialect="codeproject", route="/v1/vision/detection",
                 status="200") == ok_before + 2
    assert value(after, "perch_requests_total", dialect="codeproject", route="/v1/vision/detection",
                 status="400") == 1
    assert value(after, "perch_requests_total", dialect="deepstack", route="/v1/vision/detection",
                 status="400") == 1
    # Route labels are templates, never raw paths: unknown paths share one label, model names stay out.
    assert value(after, "perch_requests_total", dialect="codeproject", route="unmatched", status="404") == 2
    assert value(after, "perch_requests_total", route="/v1/vision/custom/{model}", status="200") == 1
    assert value(after, "perch_requests_total", dialect="roboflow", route="/{dataset}/{version}", status="200") == 1
    assert not [s for s in requests if "no/such" in s.labels["route"] or s.labels["route"].endswith("/7")]

    # Three detections on the default model (the custom route names the same one), plus Roboflow's.
    assert value(after, "perch_inference_seconds_count", **count_key) == ran_before + 4
    buckets = [s for s in after if s.name == "perch_inference_seconds_bucket" and s.labels["model"] == model]
    assert [s.labels["le"] for s in buckets][-1] == "+Inf" and len(buckets) == 13
    assert [s.value for s in buckets] == sorted(s.value for s in buckets), "buckets are cumulative"
    assert (value(after, "perch_inference_seconds_sum", **count_key) or 0) > 0
    assert value(after, "perch_model_loaded", model=model, device="cpu") == 1
    assert value(after, "perch_queue_depth", model=model) == 0
    assert value(after, "perch_queue_rejected_total", model=model) == 0
    assert value(after, "perch_mqtt_connected") == 0
    assert value(after, "process_cpu_seconds_total") is not None
    assert value(after, "process_resident_memory_bytes")


def metric_names(text: str) -> set[str]:
    """Family names (with a counter's _total) and sample names of an exposition."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        names.update(s.name for s in family.samples)
    return names


def thermal_root(tmp_path: Path, milli_celsius: int) -> Path:
    zone = tmp_path / "root/sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "temp").write_text(f"{milli_celsius}\n")
    return tmp_path / "root"


async def test_grafana_dashboard_queries_only_exported_metrics(tmp_path: Path) -> None:
    dashboard = json.loads((REPO / "deploy/grafana/perch-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queried = {name for e in exprs for name in re.findall(r"\b((?:perch|process)_[a-z_]+)", e)}
    settings = core_settings(tmp_path).model_copy(update={"hardware_root": thermal_root(tmp_path, 45000)})
    async with running(settings) as core, TestClient(TestServer(create_app(core))) as client:
        exported = metric_names(await (await client.get("/metrics")).text())
    # Camera gauges have no samples without cameras, but their families are still announced (HELP/TYPE lines).
    assert queried and not queried - exported, f"the dashboard queries unknown metrics: {queried - exported}"


async def test_task_models_are_measured_too(cp: TestClient) -> None:
    assert (await cp.post("/v1/vision/face", data=form(image_bytes("pets.jpg")))).status == 200
    samples = await scrape(cp)
    faces = [s for s in samples if s.name == "perch_inference_seconds_count" and "face" in s.labels["model"]]
    assert faces and faces[0].value >= 1 and faces[0].labels["device"] == "cpu"


async def test_only_on_the_main_listener(ds: TestClient) -> None:
    assert (await ds.get("/metrics")).status == 404


async def test_each_daemon_has_its_own_registry(cp: TestClient, tmp_path: Path) -> None:
    async with running(core_settings(tmp_path)) as other, TestClient(TestServer(create_app(other))) as fresh:
        await fresh.get("/no/such/route")
        samples = await scrape(fresh)
    assert value(samples, "perch_requests_total", route="unmatched", status="404") == 1
    assert value(samples, "perch_requests_total", route="/v1/vision/detection", status="200") is None


async def test_key_required_when_keys_are_on(tmp_path: Path) -> None:
    key = "scrape-key-0123456789"
    settings = tuned(core_settings(tmp_path), auth={"api_keys": [key]})
    async with running(settings) as core, TestClient(TestServer(create_app(core))) as client:
        resp = await client.get("/metrics")
        # A real 401 (not CodeProject's HTTP 200), so Prometheus marks the target down with the reason.
        assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        assert (await resp.json())["success"] is False
        assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
        assert await scrape(client, Authorization=f"Bearer {key}")
        assert (await client.get("/metrics", params={"api_key": key})).status == 200


async def test_temperature_from_the_thermal_zones(tmp_path: Path) -> None:
    root = thermal_root(tmp_path, 51234)
    zone = root / "sys/class/thermal/thermal_zone0"
    settings = core_settings(tmp_path).model_copy(update={"hardware_root": root})
    async with running(settings) as core, TestClient(TestServer(create_app(core))) as client:
        samples = await scrape(client)
        (zone / "temp").write_text("60000\n")  # read at scrape time, not cached
        later = await scrape(client)
    assert value(samples, "perch_temperature_celsius") == pytest.approx(51.2)
    assert value(later, "perch_temperature_celsius") == pytest.approx(60.0)


# ---- cameras and MQTT through the daemon's own lifecycle -------------------------------------------------------

_MOSQUITTO_MISSING = mosquitto_available()


@pytest.fixture
async def camera_daemon(tmp_path: Path) -> AsyncIterator[tuple[TestClient, Mosquitto, MjpegServer]]:
    if _MOSQUITTO_MISSING and os.environ.get("CI") != "true":
        pytest.skip(_MOSQUITTO_MISSING)
    clip = make_clip(tmp_path / "clip", IMAGES / "pets.jpg", kind="cut", empty_s=0.5, object_s=1, after_s=0.5)
    with Mosquitto(tmp_path) as broker, MjpegServer(clip) as camera:
        settings = core_settings(tmp_path).model_copy(update={
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "topic_prefix": "perch-metrics"},
            "cameras": [{"name": "porch", "url": camera.url, "watchdog_s": 2, "detect": {"fps": 2}}],
        })
        app = create_app(Core(settings), CODEPROJECT)
        app.cleanup_ctx.append(_core_lifecycle)
        app.cleanup_ctx.append(_cameras_lifecycle)
        async with TestClient(TestServer(app)) as client:
            yield client, broker, camera


async def _until(client: TestClient, what: str, check: Callable[[list[Sample]], bool],
                 timeout: float = 30.0) -> list[Sample]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        samples = await scrape(client)
        if check(samples):
            return samples
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@pytest.mark.asyncio(loop_scope="function")
async def test_camera_and_mqtt_gauges(camera_daemon: tuple[TestClient, Mosquitto, MjpegServer]) -> None:
    client, broker, camera = camera_daemon
    samples = await _until(client, "camera up, fps > 0, MQTT connected", lambda s: (
        value(s, "perch_camera_up", camera="porch") == 1 and value(s, "perch_mqtt_connected") == 1
        and (value(s, "perch_camera_fps", camera="porch") or 0) > 0))
    assert value(samples, "perch_camera_detect_fps", camera="porch") is not None
    broker.stop()
    camera.paused.set()  # a hung camera: connected, but no frames (the camera watchdog notices)
    await _until(client, "MQTT disconnected", lambda s: value(s, "perch_mqtt_connected") == 0)
    await _until(client, "camera down", lambda s: value(s, "perch_camera_up", camera="porch") == 0)
