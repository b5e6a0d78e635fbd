"""Shared fixtures: where the real models and photos are, settings pointing at them, a started Core, HTTP clients
of both dialects (per test, or one per module), and small helpers to build and post forms."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer

from perch.daemon import autoselect
from perch.daemon.api.common import CODEPROJECT, DEEPSTACK
from perch.daemon.app import create_app
from perch.daemon.config import Settings
from perch.daemon.core import Core

# A missing system service (needs_service mark) skips a test, or fails it under CI=true.
from helpers.services import pytest_runtest_setup  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PERCHD_SHARED", REPO.parent / "shared")).resolve()
MODELS = SHARED / "models"
IMAGES = SHARED / "images"

ClientFactory = Callable[..., Awaitable[TestClient]]
ServerFactory = Callable[..., Awaitable[TestServer]]

if not MODELS.is_dir():
    raise pytest.UsageError(f"real models not found at {MODELS}: set PERCHD_SHARED to the shared/ folder")

# `detection.model: auto` measures each candidate model's speed at a daemon's first start (seconds, and the answer
# depends on the machine). The suite's assertions are written for SSD MobileNet v1 on the CPU, so daemons it starts
# as subprocesses (which inherit this) name it, and in-process ones get the fixed speeds below; test_autoselect.py
# covers `auto` itself, with one real measurement.
DEFAULT_DETECTOR = "ssd_mobilenet_v1"
os.environ.setdefault("PERCHD__DETECTION__MODEL", DEFAULT_DETECTOR)
# (images/s with every worker busy, ms for one image alone): SSD MobileNet is the only one under 100 ms, and the
# only one that keeps up with cameras (more than 2 detections/s).
AUTO_SPEEDS = {"ssd_mobilenet_v1": (60.0, 20.0), "yolox_nano": (3.0, 150.0), "yolov8n": (1.0, 400.0)}


@pytest.fixture(scope="session", autouse=True)
def _auto_speeds() -> Iterator[None]:
    # Session scope: set before any module-scoped daemon starts.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(autoselect, "measure_model", lambda _registry, model_id: AUTO_SPEEDS[model_id])
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def image_bytes(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


# ---- settings and cores ------------------------------------------------------------------------------------------

def core_settings(tmp: Path) -> Settings:
    """The real models, state and cache under `tmp`, no legacy listener, two single-threaded CPU workers."""
    return Settings(model_dir=MODELS, state_dir=tmp / "state", cache_dir=tmp / "cache", legacy_port=0,
                    cpu={"workers": 2, "threads": 1})


def tuned(settings: Settings, **sections: dict[str, Any]) -> Settings:
    """`settings` with some fields of some sections changed, e.g. tuned(s, fetch={"enabled": True})."""
    return settings.model_copy(update={name: getattr(settings, name).model_copy(update=fields)
                                       for name, fields in sections.items()})


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Core]:
    core = Core(settings)
    await core.start()
    try:
        yield core
    finally:
        await core.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return core_settings(tmp_path)


@pytest.fixture
async def core(settings: Settings) -> AsyncIterator[Core]:
    async with running(settings) as c:
        yield c


@pytest.fixture
async def cp(aiohttp_client: ClientFactory, core: Core) -> TestClient:
    """The main listener (CodeProject.AI semantics; the cloud dialects are served there too)."""
    return await aiohttp_client(create_app(core, CODEPROJECT))


@pytest.fixture
async def ds(aiohttp_client: ClientFactory, core: Core) -> TestClient:
    """The legacy listener (DeepStack semantics: real HTTP status codes)."""
    return await aiohttp_client(create_app(core, DEEPSTACK))


# One Core per test module: the models load once, and state (the face gallery) carries from test to test. A module
# that uses these runs its tests on the module's event loop: pytestmark = pytest.mark.asyncio(loop_scope="module").

@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_core(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Core]:
    async with running(core_settings(tmp_path_factory.mktemp("core"))) as c:
        yield c


def module_client(dialect: str) -> Any:
    """A module-scoped client of `module_core` for one dialect; assign it to the fixture name: `cp = module_client(
    CODEPROJECT)` (overrides the per-test `cp` above within that module)."""

    @pytest_asyncio.fixture(scope="module", loop_scope="module")
    async def client(module_core: Core) -> AsyncIterator[TestClient]:
        async with TestClient(TestServer(create_app(module_core, dialect))) as c:
            yield c

    return client


@pytest.fixture
async def image_host(aiohttp_server: ServerFactory) -> TestServer:
    """A stand-in for the internet: serves the shared photos (subfolders too) over HTTP on 127.0.0.1."""

    async def photo(request: web.Request) -> web.Response:
        return web.Response(body=image_bytes(request.match_info["name"]), content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{name:.+}", photo)
    return await aiohttp_server(app)


# ---- requests ----------------------------------------------------------------------------------------------------

def form(files: bytes | Mapping[str, bytes] | None = None, /, *, field: str = "image", filename: str = "{field}.jpg",
         content_type: str | None = "image/jpeg", **fields: Any) -> FormData:
    """A multipart form as clients send it: the files first (bare bytes go in `field`), then `fields` as text.
    content_type=None leaves the parts untyped (aiohttp then says application/octet-stream)."""
    fd = FormData()
    uploads = {field: files} if isinstance(files, bytes) else dict(files or {})
    for name, data in uploads.items():
        fd.add_field(name, data, filename=filename.format(field=name), content_type=content_type)
    for key, value in fields.items():
        fd.add_field(key, str(value))
    return fd


async def post_status(client: TestClient, path: str, data: Any = None) -> tuple[int, dict[str, Any]]:
    resp = await client.post(path, data=data)
    return resp.status, dict(await resp.json())


async def post_json(client: TestClient, path: str, data: Any = None) -> dict[str, Any]:
    """The JSON answer of a POST that must succeed at the HTTP level, sent with a Content-Length (never chunked)."""
    resp = await client.post(path, data=data)
    assert resp.status == 200, await resp.text()
    assert resp.headers.get("Content-Length"), "JSON answers carry a Content-Length"
    return dict(await resp.json())
