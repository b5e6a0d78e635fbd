"""The memory budget: every route in a shuffled order inside 450 MiB (sampled RSS of the real daemon), the least
recently used idle task model unloaded first (never the default detector, never one with a request in flight), a
model that cannot fit refused in each dialect's shape with the budget named, and what status and the CLI show."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from perch.daemon.api.common import CODEPROJECT, DEEPSTACK
from perch.daemon.app import create_app
from perch.daemon.loaded import Residency
from perch.daemon.memory import MemoryBudget, MemoryBudgetExceeded, default_budget_mb
from perch.daemon.procfs import rss_mb
from perch.daemon.vision import classify, enhance, segment, sound

from conftest import IMAGES, MODELS, ClientFactory, core_settings, free_port, running, tuned

BUDGET_MB = 450
SPEECH = (MODELS / "sound" / "test_speech_16k.wav").read_bytes()
TEXT = ("The weather was lovely. We walked to the park and had a great time. The dog was happy. Later it rained."
        " We went home and made tea.")


def photo(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


def test_default_budget_rule() -> None:
    assert default_budget_mb(512) == 307  # a Zero 2 W: 60 %
    assert default_budget_mb(300) == 256  # never below 256 MiB
    assert default_budget_mb(8192) == 4915
    assert default_budget_mb(None) == 1024  # RAM unreadable


async def test_a_request_beside_a_load_does_not_take_the_loads_memory() -> None:
    """RSS that grows while another model loads is that model's; only a request's own growth adds to its model's
    figure (otherwise each overlap would inflate it, and a long-running box would end up refusing the model)."""
    budget = MemoryBudget(1024)
    residency = Residency(memory_mb=10.0, load_clock=budget.clock)
    ballast: list[bytearray] = []

    async def grows(mb: int, load: bool) -> None:
        if load:
            budget.loads_started += 1
        ballast.append(bytearray(os.urandom(mb << 20)))  # touched pages: RSS really grows

    await residency.tracked(grows(32, load=True))
    assert residency.memory_mb == 10.0
    await residency.tracked(grows(32, load=False))
    assert residency.memory_mb is not None and residency.memory_mb > 30.0



# ---- every route, shuffled, inside the budget ------------------------------------------------------------------

def _routes() -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (path, requests kwargs) for every route that runs a model (and the face gallery ones)."""
    face, dog, pets, plate = photo("face.jpg"), photo("dog_bicycle_car.jpg"), photo("pets.jpg"), photo(
        "plate_h786poj.jpg")
    return {
        "detection": ("/v1/vision/detection", {"files": {"image": dog}}),
        "custom yolox": ("/v1/vision/custom/yolox_nano", {"files": {"image": dog}}),
        "custom yolov8n": ("/v1/vision/custom/yolov8n", {"files": {"image": dog}}),
        "face": ("/v1/vision/face", {"files": {"image": face}}),
        "face register": ("/v1/vision/face/register", {"files": {"image": face}, "data": {"userid": "grace"}}),
        "face recognize": ("/v1/vision/face/recognize", {"files": {"image": face}}),
        "face match": ("/v1/vision/face/match", {"files": {"image1": face, "image2": face}}),
        "face list": ("/v1/vision/face/list", {}),
        "scene": ("/v1/vision/scene", {"files": {"image": pets}}),
        "alpr": ("/v1/vision/alpr", {"files": {"upload": plate}}),
        "remove background": ("/v1/image/removebackground", {"files": {"image": face}}),
        "portrait": ("/v1/image/portraitfilter", {"files": {"image": face}}),
        "super-resolution": ("/v1/image/superresolution", {"files": {"image": pets}}),
        "cartoon": ("/v1/image/cartoonise", {"files": {"image": pets}}),
        "cartoon int8": ("/v1/image/cartoonise", {"files": {"image": pets}, "data": {"model": "whitebox_int8"}}),
        "sentiment": ("/v1/text/sentiment", {"data": {"text": "I love this camera"}}),
        "summary": ("/v1/text/summarize", {"data": {"text": TEXT}}),
        "sound": ("/v1/sound/classify", {"files": {"sound": SPEECH}}),
        "ultralytics": ("/v1/predict/yolox_nano", {"files": {"image": pets}}),
        "roboflow": ("/yolov8n/1", {"data": base64.b64encode(pets)}),
        "raypack faces": ("/recog", {"files": {"file": face}, "data": {"model": "4"}}),
    }


def _ok(name: str, resp: requests.Response) -> None:
    assert resp.status_code == 200, (name, resp.status_code, resp.text[:300])
    body = resp.json()
    if name == "ultralytics":
        assert body["success"], body
    elif name == "roboflow":
        assert "predictions" in body, body
    elif name.startswith("raypack"):
        assert "results" in body and "error" not in body, body
    else:
        assert body["success"], (name, body)


class Sampler:
    """RSS of a process every 10 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.samples = pid, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mb(self.pid))
            self.samples += 1

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def budget_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, subprocess.Popen[str]]]:
    tmp = tmp_path_factory.mktemp("budget")
    port, legacy = free_port(), free_port()
    env = dict(os.environ, PERCHD_MODEL_DIR=str(MODELS), PERCHD_STATE_DIR=str(tmp / "state"),
               PERCHD_CACHE_DIR=str(tmp / "cache"), PERCHD_CONFIG="", PERCHD_HOST="127.0.0.1",
               PERCHD_LEGACY_PORT=str(legacy), PERCHD__MEMORY__BUDGET_MB=str(BUDGET_MB),
               PERCHD__CPU__WORKERS="2")
    proc = subprocess.Popen([sys.executable, "-m", "perch.daemon", "run", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status/ping", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "daemon not ready"
                time.sleep(0.2)
        yield port, legacy, proc
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_every_route_shuffled_stays_inside_the_budget(budget_daemon: tuple[int, int, subprocess.Popen[str]]) -> None:
    port, _, proc = budget_daemon
    routes = _routes()
    order = [*routes, *routes]
    random.Random(os.environ.get("PERCHD_TEST_SEED", 12)).shuffle(order)
    http = requests.Session()
    with Sampler(proc.pid) as rss:
        for name in order:
            path, kwargs = routes[name]
            _ok(name, http.post(f"http://127.0.0.1:{port}{path}", timeout=120, **kwargs))
    assert rss.samples > 100
    status = http.get(f"http://127.0.0.1:{port}/v1/status/system-status", timeout=30).json()
    memory = status["memory"]
    print(f"{len(order)} requests, RSS peak {rss.peak:.0f} MiB ({rss.samples} samples), budget {BUDGET_MB} MiB,"
          f" {memory['evictions']} unloads")
    assert rss.peak <= BUDGET_MB * 1.15, f"RSS peaked at {rss.peak:.0f} MiB with a {BUDGET_MB} MiB budget"
    assert memory["budgetMB"] == BUDGET_MB and memory["evictions"] > 0 and memory["refusals"] == 0
    loaded = {m["id"]: m["memoryMB"] for m in memory["models"]}
    assert "ssd_mobilenet_v1" in loaded and all(v is not None and v >= 0 for v in loaded.values())
    assert all("memoryMB" in m for m in status["models"] if m.get("available", True))


def test_models_list_shows_what_the_daemon_holds(budget_daemon: tuple[int, int, subprocess.Popen[str]]) -> None:
    port = budget_daemon[0]
    proc = subprocess.run([sys.executable, "-m", "perch.daemon", "models", "list"], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PERCHD_MODEL_DIR=str(MODELS), PERCHD_PORT=str(port),
                                               PERCHD_CONFIG=""))
    assert proc.returncode == 0, proc.stderr
    assert f"budget {BUDGET_MB} MiB" in proc.stdout and "ssd_mobilenet_v1" in proc.stdout
    assert "MiB" in proc.stdout.split("loaded")[-1]


# ---- which model goes, and refusals --------------------------------------------------------------------------

async def test_least_recently_used_idle_task_goes_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "perch.memory")
    async with running(tuned(core_settings(tmp_path), memory={"budget_mb": 100_000})) as core:
        reg, px = core.registry, 10_000_000
        scene_task = await classify.get_scene_task(reg, px)
        await segment.get_segment_task(reg, px)
        sound_task = await sound.get_sound_task(reg)
        await classify.get_scene_task(reg, px)  # scene used again: segmentation is now the least recent
        gate = threading.Event()
        held = asyncio.ensure_future(reg.tasks["sound"].pool.submit(lambda _: gate.wait(10)))  # a request in flight
        await asyncio.sleep(0.05)
        reg.memory.budget_mb = 64  # far below what this process holds: everything idle must go, then a refusal
        with pytest.raises(MemoryBudgetExceeded, match=r"memory\.budget_mb is 64 MiB"):
            await enhance.get_superres_task(reg, px)
        unloaded = [line.split("unloading ")[1].split(" ")[0] for line in caplog.messages if "unloading" in line]
        assert unloaded == ["segmentation", "scene"], unloaded
        assert set(reg.tasks) == {"sound"} and "ssd_mobilenet_v1" in reg.loaded
        assert "superresolution" not in reg.unavailable, "a refusal for room is not a broken model"
        gate.set()
        await held
        # A holder of an unloaded task reloads it on its next call instead of failing.
        reg.memory.budget_mb = 100_000
        assert (await scene_task.classify(photo("pets.jpg"))).label
        assert "scene" in reg.tasks and (await sound_task.classify(SPEECH, 0.1)).label


async def test_refusal_names_the_budget_in_every_dialect(tmp_path: Path, aiohttp_client: ClientFactory) -> None:
    async with running(tuned(core_settings(tmp_path), memory={"budget_mb": 64})) as core:
        cp: TestClient = await aiohttp_client(create_app(core, CODEPROJECT))
        ds: TestClient = await aiohttp_client(create_app(core, DEEPSTACK))
        # The default detector is loaded even past the budget (the appliance's reason to exist) and serves.
        fd = FormData()
        fd.add_field("image", photo("pets.jpg"), filename="a.jpg")
        assert (await (await cp.post("/v1/vision/detection", data=fd)).json())["success"]

        def form(field: str = "image") -> FormData:
            f = FormData()
            f.add_field(field, photo("pets.jpg"), filename="a.jpg")
            return f

        body = await (await cp.post("/v1/vision/scene", data=form())).json()
        assert body["success"] is False and body["code"] == 503 and "memory.budget_mb is 64 MiB" in body["error"]
        resp = await ds.post("/v1/vision/scene", data=form())
        assert resp.status == 503 and "memory.budget_mb" in (await resp.json())["error"]
        resp = await cp.post("/v1/predict/yolox_nano", data=form())
        body = await resp.json()
        assert resp.status == 503 and body["success"] is False and "memory.budget_mb" in body["message"]
        resp = await cp.post("/yolox_nano/1", data=base64.b64encode(photo("pets.jpg")))
        assert resp.status == 503 and "memory.budget_mb" in (await resp.json())["message"]
        raypack = form("file")
        raypack.add_field("model", "4")  # faces (model 1, objects, is the default detector: it serves)
        resp = await cp.post("/recog", data=raypack)
        body = await resp.json()
        assert resp.status == 503 and body["code"] == 503 and "memory.budget_mb" in body["error"]
        status = await (await cp.get("/v1/status/system-status")).json()
        assert status["memory"]["refusals"] >= 4 and status["memory"]["budgetMB"] == 64
