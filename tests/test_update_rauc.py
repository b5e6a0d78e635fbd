"""`perchd update` against real RAUC 1.8 (a private system bus, `rauc service`, file-backed A/B slots, bundles
signed by throw-away CAs): good installs, refusals before anything is written, a reboot into the new slot or back
into the old one, and every bad input with one clear line while the status routes keep answering."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from perch.daemon.api.common import CODEPROJECT, CORE
from perch.daemon.app import create_app
from perch.daemon.core import Core
from perch.daemon.update import download as dl
from perch.daemon.update import record as rec
from perch.daemon.update.errors import UpdateError
from perch.daemon.update.installer import Reporter, install
from perch.daemon.update.service import UpdateService, for_core

from helpers import rauc_fixtures
from helpers.rauc_fixtures import Bundles, file_server, needs_rauc, update_settings
from helpers.rauc_system import RaucSystem

# Fixtures shared with the other update tests, used by name.
keys, bundles, rauc = rauc_fixtures.keys, rauc_fixtures.bundles, rauc_fixtures.rauc

pytestmark = needs_rauc
PERCHD = str(Path(sys.executable).parent / "perchd")
ZEROS = b"\0" * 4096


def perchd(tmp_path: Path, system: RaucSystem | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "PERCHD_CONFIG"}
    base.update(PERCHD_STATE_DIR=str(tmp_path / "state"),
                PERCHD__UPDATE__RELEASE_FILE=str(system.release_file if system else tmp_path / "none"))
    if system is not None:
        base.update(system.env)
    base.update(env)
    return subprocess.run([PERCHD, "update", *args], env=base, capture_output=True, text=True, timeout=120)


def record(tmp_path: Path) -> rec.UpdateRecord:
    r = rec.load(tmp_path / "state")
    assert r is not None
    return r


async def status_client(aiohttp_client: Any, tmp_path: Path, system: RaucSystem | None, **update: Any) -> TestClient:
    core = Core(update_settings(tmp_path, system, **update))
    return await aiohttp_client(create_app(core, CODEPROJECT))  # type: ignore[no-any-return]


async def get_update(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/v1/status/update")
    assert resp.status == 200 and resp.headers.get("Content-Length")
    body = dict(await resp.json())
    assert body["success"] is True and body["code"] == 200
    return body


def test_cli_installs_a_good_bundle(tmp_path: Path, rauc: RaucSystem, bundles: Bundles) -> None:
    done = perchd(tmp_path, rauc, "install", str(bundles.good))
    assert done.returncode == 0, done.stderr
    # Progress as plain lines (not a terminal), RAUC's steps in order, then one line saying what happens next.
    assert " 90% Copying image to rootfs.1" in done.stderr and "100% Installing done." in done.stderr
    assert done.stdout.strip() == ("installed 2.0.0 into rootfs.1: reboot to start it (if it does not come up, the"
                                   " box goes back to 1.0.0 by itself)")
    assert rauc.slot_bytes("B") == bundles.good_image and rauc.slot_bytes("A", 4096) == ZEROS
    assert "set-primary B" in rauc.calls()
    r = record(tmp_path)
    assert (r.state, r.target_slot, r.target_bootname, r.target_version) == (rec.PENDING, "rootfs.1", "B", "2.0.0")
    assert (r.from_slot, r.from_bootname, r.from_version) == ("rootfs.0", "A", "1.0.0") and r.finished

    status = json.loads(perchd(tmp_path, rauc, "status", "--json").stdout)
    assert status["image_version"] == "1.0.0" and status["booted_slot"] == "rootfs.0"
    assert status["primary_slot"] == "rootfs.1"
    slots = {s["name"]: s for s in status["slots"]}
    assert slots["rootfs.1"]["version"] == "2.0.0" and slots["rootfs.1"]["boot_status"] == "good"
    assert status["last_update"]["result"] == "pending reboot"
    text = perchd(tmp_path, rauc, "status").stdout
    assert "booted slot:    rootfs.0 (A)" in text and "next boot:      rootfs.1 (a reboot switches to it)" in text
    assert "last update:    2.0.0 installed into rootfs.1; it starts after a reboot" in text


def test_a_bundle_signed_by_another_key_is_refused_before_anything_is_written(
        tmp_path: Path, rauc: RaucSystem, bundles: Bundles) -> None:
    done = perchd(tmp_path, rauc, "install", str(bundles.stranger))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("perchd update: bundle refused: its signature does not match this system's keyring")
    assert rauc.slot_bytes("B", 4096) == ZEROS and rauc.slot_bytes("A", 4096) == ZEROS
    # The boot loader was only asked, never told anything.
    assert all(c.split()[0] in ("get-primary", "get-state") for c in rauc.calls())
    r = record(tmp_path)
    assert r.state == rec.FAILED and r.error_code == "refused-signature"


@pytest.mark.parametrize("which, code, words", [
    ("other_board", "refused-compatible", "Expected 'perch-arm64' but bundle manifest has 'other-board'"),
    ("corrupt", "bad-bundle", "not a valid RAUC bundle"),
])
async def test_refused_bundles(tmp_path: Path, rauc: RaucSystem, bundles: Bundles, which: str, code: str,
                               words: str) -> None:
    with pytest.raises(UpdateError) as err:
        await install(tmp_path / "state", rauc.release_file, str(getattr(bundles, which)))
    assert err.value.code == code and words in err.value.message
    assert rauc.slot_bytes("B", 4096) == ZEROS and "set-primary B" not in rauc.calls()
    assert record(tmp_path).state == rec.FAILED


async def test_rollback_is_detected_after_the_reboot(tmp_path: Path, rauc: RaucSystem, bundles: Bundles,
                                                     aiohttp_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    steps: list[tuple[int, str]] = []
    await install(tmp_path / "state", rauc.release_file, str(bundles.good),
                  Reporter(progress=lambda p, m: steps.append((p, m))))
    assert steps[0][0] == 0 and steps[-1] == (100, "Installing done.")
    client = await status_client(aiohttp_client, tmp_path, rauc)
    assert (await get_update(client))["update"]["last_update"]["result"] == "pending reboot"

    # perchd restarts (systemd, a crash) without a reboot: nothing to decide yet.
    service = UpdateService(update_settings(tmp_path, rauc))
    await service.start()
    assert record(tmp_path).state == rec.PENDING

    # The new slot never reached READY: its boot tries ran out and the boot loader went back to A.
    rauc.record_installed("B", "2.0.0")
    rauc.reboot(into="A")
    await UpdateService(update_settings(tmp_path, rauc)).start()
    r = record(tmp_path)
    assert r.state == rec.ROLLED_BACK and r.checked
    assert "update: rolled back: 2.0.0 did not start, running 1.0.0" in caplog.text
    body = await get_update(client)
    assert body["message"] == "last update: rolled back: 2.0.0 did not start, running 1.0.0"
    assert body["update"]["last_update"]["result"] == "rolled back"
    assert body["update"]["booted_slot"] == "rootfs.0"


async def test_a_good_update_is_reported_after_the_reboot(tmp_path: Path, rauc: RaucSystem, bundles: Bundles,
                                                          aiohttp_client: Any) -> None:
    await install(tmp_path / "state", rauc.release_file, str(bundles.good))
    rauc.record_installed("B", "2.0.0")
    rauc.reboot(into="B")
    client = await status_client(aiohttp_client, tmp_path, rauc)
    await for_core(client.server.app[CORE]).start()
    body = await get_update(client)
    assert body["update"]["last_update"]["summary"] == "updated to 2.0.0"
    assert body["update"]["last_update"]["result"] == "success" and body["update"]["booted_slot"] == "rootfs.1"
    version = await (await client.get("/v1/status/version")).json()
    assert version["image_version"] == "2.0.0" and version["success"]


async def test_only_one_install_at_a_time(tmp_path: Path, rauc: RaucSystem, bundles: Bundles) -> None:
    (rauc.boot / "slow").touch()  # the boot loader takes its time: RAUC stays busy
    first = asyncio.create_task(install(tmp_path / "state", rauc.release_file, str(bundles.good)))
    try:
        for _ in range(400):
            if (tmp_path / "state" / rec.RECORD_FILE).exists():
                break
            await asyncio.sleep(0.05)
        # Same box, same state: perchd's own lock answers.
        with pytest.raises(UpdateError) as err:
            await install(tmp_path / "state", rauc.release_file, str(bundles.good))
        assert err.value.code == "busy"
        # Another state directory: RAUC itself is busy.
        other = await asyncio.to_thread(perchd, tmp_path / "other", rauc, "install", str(bundles.good))
        assert other.returncode == 1
        assert other.stderr.startswith("perchd update: an update is already being installed")
    finally:
        await first
    assert record(tmp_path).state == rec.PENDING


async def test_install_from_a_url(tmp_path: Path, rauc: RaucSystem, bundles: Bundles, aiohttp_server: Any,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    server = await file_server(aiohttp_server, {"perch-2.0.0-arm64.raucb": bundles.good})
    url = str(server.make_url("/perch-2.0.0-arm64.raucb"))
    seen: list[tuple[int, int | None]] = []
    r = await install(tmp_path / "state", rauc.release_file, url, Reporter(download=lambda d, t: seen.append((d, t))))
    assert r.state == rec.PENDING and r.source == url and rauc.slot_bytes("B") == bundles.good_image
    assert seen[-1] == (bundles.good.stat().st_size, bundles.good.stat().st_size)
    assert not any((tmp_path / "state" / dl.DOWNLOAD_DIR).iterdir())  # the download is removed after installing

    # The CLI draws the download too, then refuses a missing file and a wrong sha256.
    done = await asyncio.to_thread(perchd, tmp_path / "cli", rauc, "install", url)
    assert done.returncode == 0 and "downloading" in done.stderr
    with pytest.raises(UpdateError, match="HTTP 404"):
        await install(tmp_path / "state", rauc.release_file, str(server.make_url("/gone.raucb")))
    with pytest.raises(UpdateError, match="does not match the release feed"):
        await install(tmp_path / "state", rauc.release_file, url, sha256="0" * 64)
    monkeypatch.setattr(dl, "RESERVE_BYTES", 1 << 62)
    with pytest.raises(UpdateError) as err:
        await install(tmp_path / "state", rauc.release_file, url)
    assert err.value.code == "no-space" and "not enough space for the update" in err.value.message
    assert not any((tmp_path / "state" / dl.DOWNLOAD_DIR).iterdir())
