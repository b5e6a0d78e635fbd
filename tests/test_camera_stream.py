"""The live camera routes under bad conditions, through a real daemon app with a real HTTP MJPEG camera: frames
encoded once for every viewer, slow / stalled / vanished clients, the viewer limit, unknown cameras, API keys,
annotated snapshots, the recent-events list, and a shutdown that open streams cannot hold up."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import pytest_asyncio
from aiohttp import ClientSession, ClientTimeout
from aiohttp.test_utils import TestServer

from perch.daemon.api.common import CODEPROJECT, CORE, DEEPSTACK
from perch.daemon.app import _cameras_lifecycle, create_app
from perch.daemon.core import Core
from perch.daemon.vision.annotate import color_for
from perch.daemon.web.camera_routes import LIVE

from conftest import IMAGES, core_settings, running
from helpers.mjpeg_server import MjpegServer
from helpers.rtsp_server import make_clip

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY = "stream-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_VIEWERS = 3


class Camera:
    def __init__(self, tmp: Path) -> None:
        self.empty = make_clip(tmp / "empty", IMAGES / "squat.bmp", kind="cut", empty_s=0.1, object_s=0, after_s=0)
        self.person = make_clip(tmp / "person", IMAGES / "squat.bmp", kind="still")
        self.server = MjpegServer(self.empty, fps=15)


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cam = Camera(tmp_path_factory.mktemp("stream-camera"))
    with cam.server:
        yield cam


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(tmp_path_factory: pytest.TempPathFactory, camera: Camera) -> AsyncIterator[TestServer]:
    base = core_settings(tmp_path_factory.mktemp("stream-core"))
    settings = base.model_copy(update={
        "cameras": [{"name": "porch", "url": camera.server.url,
                     "detect": {"fps": 5, "labels": ["person"], "min_score": 0.5}}],
        "web": base.web.model_copy(update={"max_viewers_per_camera": MAX_VIEWERS, "stream_fps": 15,
                                           "viewer_stall_s": 1.0}),
        "auth": base.auth.model_copy(update={"api_keys": [KEY]}),
    })
    async with running(settings) as core:
        app = create_app(core, CODEPROJECT)
        app.cleanup_ctx.append(_cameras_lifecycle)
        server = TestServer(app)
        await server.start_server()
        try:
            await _until("the camera online", lambda: core.cameras.service.status()["porch"]["online"])
            yield server
        finally:
            await server.close()


def _core(server: TestServer) -> Core:
    return server.app[CORE]


async def _until(what: str, check: Any, timeout: float = 60.0) -> Any:
    end = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < end:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def read_parts(response: Any, count: int) -> list[bytes]:
    """`count` JPEG parts of a multipart/x-mixed-replace body, as the daemon frames them."""
    frames = []
    while len(frames) < count:
        length = None
        while (line := await response.content.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        assert length is not None, "a part without Content-Length"
        frames.append(await response.content.readexactly(length))
        assert await response.content.readline() == b"\r\n"
    return frames


def _view(server: TestServer) -> Any:
    return server.app[LIVE].views["porch"]


async def test_frames_are_encoded_once_for_all_viewers(daemon: TestServer) -> None:
    timeout = ClientTimeout(total=60)
    async with ClientSession(timeout=timeout) as session:
        responses = [await session.get(daemon.make_url("/cameras/porch/stream.mjpeg"), headers=AUTH)
                     for _ in range(MAX_VIEWERS)]
        for r in responses:
            assert r.status == 200 and r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        encoded_before = _view(daemon).encoded
        got = await asyncio.gather(*(read_parts(r, 8) for r in responses))
        encoded = _view(daemon).encoded - encoded_before
        for r in responses:
            r.close()
    distinct = {hashlib.sha256(f).digest() for frames in got for f in frames}
    assert all(f.startswith(b"\xff\xd8") for frames in got for f in frames)
    # Every viewer got the same encoded bytes: three viewers cost one encoding per frame, not three.
    assert len(distinct) <= encoded + 1
    assert sum(len(frames) for frames in got) >= 2 * encoded
    await _until("the viewers to leave", lambda: not _view(daemon).viewers)


def _stalled_client(port: int) -> socket.socket:
    """Asks for the stream and never reads (a tiny receive window, so the server's buffers fill soon)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /cameras/porch/stream.mjpeg HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n"
                 .encode())
    return sock


async def test_stalled_and_slow_viewers_slow_nobody_else(daemon: TestServer, camera: Camera,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="perch.web")
    camera.server.show(camera.person)  # bigger frames: the stalled client's buffers fill sooner
    core = _core(daemon)
    worker = core.cameras.service.worker("porch")
    async with ClientSession(timeout=ClientTimeout(total=120)) as session:
        good = await session.get(daemon.make_url("/cameras/porch/stream.mjpeg"), headers=AUTH)
        slow = await session.get(daemon.make_url("/cameras/porch/stream.mjpeg"), headers=AUTH)
        await read_parts(good, 2)
        stalled = await asyncio.to_thread(_stalled_client, daemon.port)
        try:
            await _until("three viewers", lambda: len(_view(daemon).viewers) == 3)
            view = _view(daemon)
            encoded0, seq0 = view.encoded, worker.reader.latest().seq
            received = 0
            stop = asyncio.Event()

            async def watch() -> None:
                nonlocal received
                while not stop.is_set():
                    received += len(await read_parts(good, 1))

            async def dawdle() -> None:
                while not stop.is_set():
                    await read_parts(slow, 1)
                    await asyncio.sleep(0.5)

            tasks = [asyncio.create_task(watch()), asyncio.create_task(dawdle())]
            # The stalled client is dropped once its buffers are full and it has accepted nothing for 1 s.
            await _until("the stalled viewer to be dropped", lambda: len(view.viewers) == 2)
            stop.set()
            await asyncio.wait(tasks, timeout=10)
            encoded = view.encoded - encoded0
            frames = worker.reader.latest().seq - seq0
        finally:
            stalled.close()
            good.close()
            slow.close()
    # Meanwhile the good viewer got (nearly) every frame that was encoded, and the camera kept reading its stream:
    # the producer never waited for the stalled or the slow viewer.
    assert encoded > 0 and received >= 0.8 * encoded, (received, encoded)
    assert frames >= 0.8 * encoded, (frames, encoded)
    assert core.cameras.service.status()["porch"]["online"]
    assert "a live viewer accepted nothing for 1 s; dropped" in caplog.text
    await _until("all viewers gone", lambda: not view.viewers)


async def test_vanished_viewer_is_dropped(daemon: TestServer) -> None:
    async with ClientSession(timeout=ClientTimeout(total=60)) as session:
        response = await session.get(daemon.make_url("/cameras/porch/stream.mjpeg"), headers=AUTH)
        await read_parts(response, 1)
        assert len(_view(daemon).viewers) == 1
        # Reset the connection mid-stream, as a phone that loses Wi-Fi does.
        sock = response.connection.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        response.connection.transport.abort()
        await _until("the vanished viewer to be dropped", lambda: not _view(daemon).viewers)
    # The next viewer is served as usual.
    async with ClientSession(timeout=ClientTimeout(total=60)) as session, \
            session.get(daemon.make_url("/cameras/porch/stream.mjpeg"), headers=AUTH) as response:
        assert len(await read_parts(response, 2)) == 2


async def test_viewer_limit_is_refused_in_words(daemon: TestServer) -> None:
    async with ClientSession(timeout=ClientTimeout(total=60)) as session:
        open_ = [await session.get(daemon.make_url("/cameras/porch/stream.mjpeg"), headers=AUTH)
                 for _ in range(MAX_VIEWERS)]
        assert all(r.status == 200 for r in open_)
        async with session.get(daemon.make_url("/cameras/porch/stream.mjpeg"), headers=AUTH) as refused:
            assert refused.status == 503 and refused.headers["Retry-After"]
            body = await refused.json()
        assert body["success"] is False and "web.max_viewers_per_camera" in body["error"]
        open_[0].close()
        await _until("a free place", lambda: len(_view(daemon).viewers) < MAX_VIEWERS)
        async with session.get(daemon.make_url("/cameras/porch/stream.mjpeg"), headers=AUTH) as again:
            assert again.status == 200
        for r in open_[1:]:
            r.close()


@pytest.mark.parametrize("path", ["/cameras/garage/stream.mjpeg", "/cameras/garage/snapshot.jpg",
                                  "/cameras/porch/events/123-abc.jpg", "/cameras/events?camera=garage"])
async def test_unknown_camera_or_event_is_a_404_json(daemon: TestServer, path: str) -> None:
    async with ClientSession() as session, session.get(daemon.make_url(path), headers=AUTH) as response:
        assert response.status == 404 and response.content_type == "application/json"
        body = await response.json()
    assert body["success"] is False and body["code"] == 404
    assert "porch" in body["error"] or "event" in body["error"]


@pytest.mark.parametrize("path", ["/cameras/porch/stream.mjpeg", "/cameras/porch/snapshot.jpg", "/cameras/events"])
async def test_camera_routes_want_the_key(daemon: TestServer, path: str) -> None:
    async with ClientSession(timeout=ClientTimeout(total=30)) as session:
        for headers, query in (({}, ""), ({"Authorization": "Bearer wrong"}, ""), ({}, "?api_key=wrong")):
            async with session.get(daemon.make_url(path + query), headers=headers) as r:
                assert r.status == 401 and "unauthorized" in (await r.json())["error"]
        sep = "&" if "?" in path else "?"
        for headers, query in ((AUTH, ""), ({}, f"{sep}api_key={KEY}")):
            async with session.get(daemon.make_url(path + query), headers=headers) as r:
                assert r.status == 200
    # The page itself loads without a key (it then asks for one).
    async with ClientSession() as session, session.get(daemon.make_url("/")) as r:
        assert r.status == 200 and "text/html" in r.headers["Content-Type"]


async def test_snapshot_and_events_show_the_person(daemon: TestServer, camera: Camera) -> None:
    camera.server.show(camera.empty)
    worker = _core(daemon).cameras.service.worker("porch")
    await _until("an empty scene", lambda: not worker.tracker.tracks, timeout=90)
    camera.server.show(camera.person)
    track = await _until("a person in view", lambda: next(
        (t for t in worker.tracker.tracks if t.confirmed and t.label == "person"), None))
    async with ClientSession(timeout=ClientTimeout(total=30)) as session:
        async with session.get(daemon.make_url("/cameras/porch/snapshot.jpg"), headers=AUTH) as r:
            assert r.status == 200 and r.content_type == "image/jpeg"
            jpeg = await r.read()
        async with session.get(daemon.make_url("/cameras/events?camera=porch&limit=5"), headers=AUTH) as r:
            events = (await r.json())["events"]
        person = next(e for e in events if e["id"] == track.id)
        assert person["label"] == "person" and person["top_score"] >= 0.5 and person["end_time"] is None
        async with session.get(daemon.make_url(person["snapshot"]), headers=AUTH) as r:
            assert r.status == 200 and (await r.read()).startswith(b"\xff\xd8")
        async with session.get(daemon.make_url("/cameras/events?limit=many"), headers=AUTH) as r:
            assert r.status == 400 and "limit" in (await r.json())["error"]
    # The box is drawn in the person's colour along the top edge of the tracked box.
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    x1, y1, x2, _ = track.box
    edge = image[y1, x1 + 5:x2 - 5].astype(int)
    assert np.median(np.abs(edge - np.array(color_for("person"))).sum(axis=1)) < 90


async def test_history_route_counts_requests(daemon: TestServer) -> None:
    async with ClientSession() as session, session.get(daemon.make_url("/v1/status/history"), headers=AUTH) as r:
        body = await r.json()
    assert body["success"] is True and body["bucketSeconds"] == 10
    assert "current" in body and "ssd_mobilenet_v1" in body["models"]
    assert body["current"]["inferences"] >= 0


async def test_legacy_listener_has_no_dashboard(daemon: TestServer) -> None:
    app = create_app(_core(daemon), DEEPSTACK)
    assert not any(r.resource and r.resource.canonical == "/" for r in app.router.routes())


async def test_shutdown_is_not_held_up_by_open_streams(tmp_path: Path, camera: Camera) -> None:
    """A second daemon: open a stream, stop the server; the stream ends and the stop completes."""
    base = core_settings(tmp_path)
    settings = base.model_copy(update={"cameras": [{"name": "porch", "url": camera.server.url}]})
    async with running(settings) as core:
        app = create_app(core, CODEPROJECT)
        app.cleanup_ctx.append(_cameras_lifecycle)
        server = TestServer(app)
        await server.start_server()
        await _until("the camera online", lambda: core.cameras.service.status()["porch"]["online"])
        async with ClientSession() as session:
            response = await session.get(server.make_url("/cameras/porch/stream.mjpeg"))
            await read_parts(response, 1)
            # aiohttp would wait up to 60 s for a handler that never ends; 30 s here only catches a hang.
            await asyncio.wait_for(server.close(), 30)
            await asyncio.wait_for(response.content.read(), 30)  # the body ends (EOF) instead of hanging
            response.close()
