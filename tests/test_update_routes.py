"""Update routes and the CLI without RAUC running: /v1/status/update, the image fields of /v1/status/version and
/updateavailable, the release feed (a local HTTP server), and every bad input answered with one clear line while the
daemon keeps serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from perch.daemon.api.common import CODEPROJECT, DEEPSTACK
from perch.daemon.app import create_app
from perch.daemon.core import Core
from perch.daemon.update import record as rec

from helpers.rauc_fixtures import file_server, update_settings

FEED = {"releases": [{"version": "2.0.0", "url": "perch-2.0.0-arm64.raucb", "notes_url": "2.0.0.html"},
                     {"version": "1.9.0", "url": "perch-1.9.0-arm64.raucb"}]}


@pytest.fixture(autouse=True)
def no_system_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever this machine has: these tests see a system without a reachable RAUC.
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")


def with_release(tmp_path: Path, version: str = "1.0.0") -> Path:
    path = tmp_path / "release"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(f"VERSION={version}\n")
    return path


async def client_for(aiohttp_client: Any, tmp_path: Path, semantics: str = CODEPROJECT, release: bool = True,
                     **update: Any) -> TestClient:
    settings = update_settings(tmp_path, None, **update)
    if release:
        settings.update.release_file = with_release(tmp_path)
    return await aiohttp_client(create_app(Core(settings), semantics))  # type: ignore[no-any-return]


async def get(client: TestClient, path: str) -> dict[str, Any]:
    resp = await client.get(path)
    assert resp.status == 200 and resp.headers.get("Content-Length"), await resp.text()
    return dict(await resp.json())


async def test_status_route_without_rauc(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await client_for(aiohttp_client, tmp_path)
    body = await get(client, "/v1/status/update")
    assert body["success"] is True and body["code"] == 200 and body["requestId"]
    update = body["update"]
    assert update["image_version"] == "1.0.0" and update["rauc"]["available"] is False
    assert "RAUC" in body["message"] and update["last_update"] is None
    assert update["feed"]["url"] is None and update["update_available"] is False
    assert (await get(client, "/v1/server/status/update"))["success"]
    # Wrong method: the dialect's 405, and the daemon goes on serving.
    resp = await client.post("/v1/status/update")
    assert resp.status == 405 and (await resp.json())["success"] is False
    ds = await client_for(aiohttp_client, tmp_path / "ds", DEEPSTACK)
    assert (await ds.post("/v1/status/update")).status == 405
    assert (await get(client, "/v1/status/ping"))["success"]


async def test_a_damaged_update_record_is_reported_not_fatal(aiohttp_client: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / rec.RECORD_FILE).write_text('{"state": ')
    client = await client_for(aiohttp_client, tmp_path)
    body = await get(client, "/v1/status/update")
    assert body["success"] and "update.json is unreadable" in body["update"]["record_error"]
    (state / rec.RECORD_FILE).write_text('["a list"]')
    assert "not a JSON object" in (await get(client, "/v1/status/update"))["update"]["record_error"]


async def test_version_routes_report_the_image_version(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await client_for(aiohttp_client, tmp_path)
    version = await get(client, "/v1/status/version")
    assert version["image_version"] == "1.0.0" and version["version"]["major"] is not None
    available = await get(client, "/v1/status/updateavailable")
    # No feed configured: nothing is asked, today's fields stay as they were.
    assert available["image_version"] == "1.0.0" and available["updateAvailable"] is False
    assert "latest_image_version" not in available and available["latest"] == available["current"]
    pip = await client_for(aiohttp_client, tmp_path / "pip", release=False)
    assert "image_version" not in await get(pip, "/v1/status/version")  # a pip install has no image version


async def test_updateavailable_asks_the_feed_when_configured(aiohttp_client: Any, aiohttp_server: Any,
                                                             tmp_path: Path) -> None:
    server = await file_server(aiohttp_server, {"feed.json": json.dumps(FEED).encode(), "bad.json": b"{releases",
                                                "empty.json": b'{"releases": []}'})
    client = await client_for(aiohttp_client, tmp_path, feed_url=str(server.make_url("/feed.json")))
    body = await get(client, "/v1/status/updateavailable")
    assert body["updateAvailable"] is True and body["latest_image_version"] == "2.0.0"
    assert body["release_url"] == str(server.make_url("/2.0.0.html"))
    assert body["message"] == "Perch 2.0.0 is available (installed: 1.0.0)"
    status = await get(client, "/v1/status/update")
    assert status["update"]["feed"]["latest"]["url"] == str(server.make_url("/perch-2.0.0-arm64.raucb"))

    for name, words in (("bad.json", "is not a valid release index (not JSON)"), ("missing.json", "HTTP 404")):
        bad = await client_for(aiohttp_client, tmp_path / name, feed_url=str(server.make_url(f"/{name}")))
        body = await get(bad, "/v1/status/updateavailable")
        assert body["success"] is True and body["updateAvailable"] is False and words in body["feed_error"]
        assert (await get(bad, "/v1/status/ping"))["success"]
    empty = await client_for(aiohttp_client, tmp_path / "empty", feed_url=str(server.make_url("/empty.json")))
    body = await get(empty, "/v1/status/updateavailable")
    assert body["latest_image_version"] is None and body["updateAvailable"] is False


def perchd(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str,
           **env: str) -> tuple[int, str, str]:
    """`perchd update ARGS` in this process (a subprocess per case would cost a second each)."""
    from perch.daemon.__main__ import main

    with monkeypatch.context() as m:
        m.delenv("PERCHD_CONFIG", raising=False)
        for name, value in {"PERCHD_STATE_DIR": str(tmp_path / "state"),
                            "PERCHD__UPDATE__RELEASE_FILE": str(tmp_path / "none"), **env}.items():
            m.setenv(name, value)
        code = main(["update", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_bad_input_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "b.raucb"
    bundle.write_bytes(b"x")
    cases = [
        # A desktop pip install: no RAUC program, no service.
        (("install", str(bundle)), {"PATH": str(tmp_path)},
         "updates apply to the Perch SD-card image only, and this system has no RAUC"),
        (("install", str(bundle)), {}, "the RAUC service does not answer"),
        (("install", str(tmp_path / "missing.raucb")), {}, "does not exist"),
        (("install", str(tmp_path)), {}, "is not a file"),
        (("install", "ftp://example.org/x.raucb"), {}, "only http:// and https:// addresses"),
        (("install", "http:///x.raucb"), {}, "has no host name"),
        (("install", "latest"), {}, "no release feed is configured (set update.feed_url)"),
    ]
    for args, env, words in cases:
        code, _, err = perchd(capsys, monkeypatch, tmp_path, *args, **env)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and words in lines[0], (args, err)
        assert lines[0].startswith("perchd update: ")
    _, _, err = perchd(capsys, monkeypatch, tmp_path, "install", str(bundle), PATH=str(tmp_path))
    assert "pip install --upgrade perchd" in err
    code, out, _ = perchd(capsys, monkeypatch, tmp_path, "status", PATH=str(tmp_path))
    assert code == 0 and "image version:  unknown (not a Perch image)" in out
    assert "last update:    none recorded" in out
    _, out, _ = perchd(capsys, monkeypatch, tmp_path, "status", "--json")
    assert json.loads(out)["rauc"]["code"] == "rauc-unavailable"
