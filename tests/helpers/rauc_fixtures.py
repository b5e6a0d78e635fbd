"""pytest fixtures around helpers/rauc_system.py, shared by the update test modules (import them by name)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from perch.daemon.config import Settings
from perch.daemon.update import record as rec

from .rauc_system import RaucSystem, SigningKey, make_bundle, make_signing_key, rauc_missing

# Under CI everything is installed: a missing piece must fail the run, not skip it.
needs_rauc = pytest.mark.skipif(bool(rauc_missing()) and os.environ.get("CI") != "true",
                                reason=str(rauc_missing()))


@dataclass(frozen=True)
class Bundles:
    good: Path  # 2.0.0, signed by the system's CA
    good_image: bytes
    stranger: Path  # 2.0.0, signed by another CA
    other_board: Path  # signed right, for another compatible
    corrupt: Path


@dataclass(frozen=True)
class Keys:
    perch: SigningKey
    stranger: SigningKey


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    return Keys(make_signing_key(folder, "perch"), make_signing_key(folder, "stranger"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Bundles:
    folder = tmp_path_factory.mktemp("bundles")
    good, image = make_bundle(folder / "perch-2.0.0-arm64.raucb", keys.perch, "2.0.0")
    stranger, _ = make_bundle(folder / "stranger.raucb", keys.stranger, "2.0.0")
    other, _ = make_bundle(folder / "other.raucb", keys.perch, "2.0.0", compatible="other-board")
    corrupt = folder / "corrupt.raucb"
    corrupt.write_bytes(good.read_bytes()[:4096] + b"\0" * 4096)  # a truncated download
    # RAUC takes ownership of bundles it installs (0644 at most): keep them as a careful download would be.
    for path in (good, stranger, other, corrupt):
        path.chmod(0o644)
    return Bundles(good, image, stranger, other, corrupt)


@pytest.fixture
def rauc(tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> Iterator[RaucSystem]:
    system = RaucSystem(tmp_path / "rauc", keys.perch).start()
    for name, value in system.env.items():
        monkeypatch.setenv(name, value)
    # The kernel's boot id, as the simulated reboots change it.
    monkeypatch.setattr(rec, "BOOT_ID_FILE", system.boot_id_file)
    try:
        yield system
    finally:
        system.stop()


def update_settings(tmp_path: Path, system: RaucSystem | None, **update: object) -> Settings:
    release = system.release_file if system is not None else tmp_path / "no-release"
    return Settings(state_dir=tmp_path / "state", model_dir=tmp_path / "models", cache_dir=tmp_path / "cache",
                    legacy_port=0, update={"release_file": release, **update})


async def file_server(aiohttp_server: object, files: dict[str, bytes | Path]) -> TestServer:
    """An HTTP server on 127.0.0.1 for feeds and bundles; unknown paths answer 404."""

    async def serve(request: web.Request) -> web.StreamResponse:
        item = files.get(request.match_info["name"])
        if item is None:
            raise web.HTTPNotFound()
        body = item.read_bytes() if isinstance(item, Path) else item
        return web.Response(body=body, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/{name:.+}", serve)
    return await aiohttp_server(app)  # type: ignore[operator,no-any-return]
