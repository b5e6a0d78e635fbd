"""Update logic without RAUC: version order, release file, feed parsing, the update record's outcome after a reboot,
RAUC error texts, progress output, the `update` config section and the Home Assistant payloads."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from perch.daemon.config import ConfigError, Settings, load_settings
from perch.daemon.update import record as rec
from perch.daemon.update.errors import explain
from perch.daemon.update.feed import Release, parse_feed
from perch.daemon.update.ha_entity import discovery_payload, state_payload
from perch.daemon.update.progress import Progress
from perch.daemon.update.release import image_version, read_release
from perch.daemon.update.status import cmdline_bootname
from perch.daemon.update.versions import newer, version_key

from helpers.ha_update_schema import check_state


def test_versions_order_numerically_and_pep440() -> None:
    assert newer("1.10.0", "1.9.3")
    assert newer("2026.12.1", "2026.11.30")
    assert newer("1.3.0", "1.3.0rc1") and not newer("1.3.0rc1", "1.3.0")
    assert not newer("1.2.0", "1.2.0")
    assert newer("1.2.0", None)
    # Free-form versions still order by their numbers.
    assert newer("build-20261201", "build-20261130")
    assert sorted(["1.0.10", "1.0.9", "1.0.0"], key=version_key) == ["1.0.0", "1.0.9", "1.0.10"]


def test_release_file(tmp_path: Path) -> None:
    path = tmp_path / "release"
    assert image_version(path) is None  # a pip install has none
    path.write_text('# Perch image\nNAME="Perch OS"\nVERSION=1.4.2\nBUILD_ID = "2026-11-30 abc"\n')
    assert image_version(path) == "1.4.2"
    assert read_release(path)["NAME"] == "Perch OS"
    path.write_text("NAME=x\n")
    assert image_version(path) is None


FEED = {"releases": [
    {"version": "1.10.0", "url": "perch-1.10.0-arm64.raucb", "sha256": "ab" * 32, "notes_url": "1.10.0.html",
     "published": "2026-12-01", "summary": "Faster faces"},
    {"version": "1.9.0", "url": "https://cdn.example.org/perch-1.9.0-arm64.raucb"},
    {"version": "2.0.0", "url": "https://cdn.example.org/other.raucb", "compatible": "other-board"},
]}


def test_feed_picks_the_highest_version_for_this_system() -> None:
    best = parse_feed(json.dumps(FEED).encode(), "https://updates.example.org/perch/feed.json", "perch-arm64")
    assert best is not None and best.version == "1.10.0"  # not the list order, not another board's release
    assert best.url == "https://updates.example.org/perch/perch-1.10.0-arm64.raucb"  # relative to the feed
    assert best.notes_url == "https://updates.example.org/perch/1.10.0.html"
    assert parse_feed(b'{"releases": []}', "https://x/feed.json") is None


@pytest.mark.parametrize("body, words", [
    (b"<html>503</html>", "not JSON"),
    (b'{"versions": []}', "releases"),
    (b'{"releases": [{"version": "1 2", "url": "x"}]}', "releases.0.version"),
    (b'{"releases": [{"version": "1.0", "url": "x", "sha256": "zz"}]}', "sha256"),
    (b"[1, 2]", "(top level)"),
    (b"\xff\xfe", "not JSON"),
])
def test_feed_garbage_is_one_clear_line(body: bytes, words: str) -> None:
    from perch.daemon.update.errors import UpdateError

    with pytest.raises(UpdateError) as err:
        parse_feed(body, "https://x/feed.json")
    assert err.value.code == "feed"
    assert "is not a valid release index" in err.value.message and words in err.value.message
    assert "\n" not in err.value.message


def _record(state: str = rec.PENDING, boot: str = "boot-1") -> rec.UpdateRecord:
    return rec.UpdateRecord(state=state, target_slot="rootfs.1", target_bootname="B", target_version="2.0.0",
                            from_slot="rootfs.0", from_bootname="A", from_version="1.0.0", source="x.raucb",
                            started=rec.now(), boot_id=boot)


def test_outcome_after_reboot() -> None:
    r = _record()
    assert not rec.resolve(r, "A", "boot-1", "1.0.0")  # daemon restart without a reboot: still pending
    assert r.state == rec.PENDING and r.result == "pending reboot"
    assert rec.resolve(r, "B", "boot-2", "2.0.0")
    assert r.state == rec.UPDATED and r.summary() == "updated to 2.0.0" and r.result == "success" and r.checked

    r = _record()
    assert rec.resolve(r, "A", "boot-2", "1.0.0")
    assert r.state == rec.ROLLED_BACK and r.result == "rolled back"
    assert r.summary() == "rolled back: 2.0.0 did not start, running 1.0.0"
    assert not rec.resolve(r, "A", "boot-3", "1.0.0")  # decided once

    r = _record(rec.INSTALLING)
    assert not rec.resolve(r, "A", "boot-1", None, installer_alive=True)
    assert not rec.resolve(r, "A", "boot-1", None, rauc_busy=True)
    assert rec.resolve(r, "A", "boot-2", None)
    assert r.state == rec.FAILED and r.error_code == "interrupted"


def test_record_file_round_trip_and_damage(tmp_path: Path) -> None:
    assert rec.load(tmp_path) is None
    r = _record()
    rec.save(tmp_path, r)
    assert rec.load(tmp_path) == r
    (tmp_path / rec.RECORD_FILE).write_text("{not json")
    with pytest.raises(rec.RecordError, match="unreadable"):
        rec.load(tmp_path)


def test_install_lock_refuses_a_second_installer(tmp_path: Path) -> None:
    from perch.daemon.update.errors import UpdateError

    with rec.install_lock(tmp_path):
        assert rec.install_running(tmp_path)
        with pytest.raises(UpdateError) as err, rec.install_lock(tmp_path):
            pass
        assert err.value.code == "busy"
    assert not rec.install_running(tmp_path)


def test_booted_slot_from_the_kernel_command_line(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("BOOT_IMAGE=/vmlinuz root=LABEL=rootfs-b rauc.slot=B quiet\n")
    assert cmdline_bootname(cmdline) == "B"
    cmdline.write_text("root=/dev/sda2 quiet\n")
    assert cmdline_bootname(cmdline) is None
    assert cmdline_bootname(tmp_path / "missing") is None


@pytest.mark.parametrize("text, code", [
    ("signature verification failed: Verify error: self-signed certificate", "refused-signature"),
    ("Installation error: Compatible mismatch: Expected 'perch-arm64' but bundle manifest has 'x'",
     "refused-compatible"),
    ("Invalid bundle format: Signature size (628) exceeds bundle size", "bad-bundle"),
    ("Failed writing image: No space left on device", "no-space"),
    ("Already processing a different method", "busy"),
    ("something new", "failed"),
])
def test_rauc_errors_become_clear_lines(text: str, code: str) -> None:
    err = explain(text)
    assert err.code == code and text in err.message and "\n" not in err.message


def test_progress_plain_lines_and_terminal_bar() -> None:
    plain = io.StringIO()
    p = Progress(plain, tty=False)
    for done in range(0, 1_000_001, 65536):
        p.download(done, 1_000_000)
    p.install(20, "Checking bundle")
    p.install(20, "Checking bundle")
    p.install(100, "Installing done.")
    p.end()
    lines = plain.getvalue().splitlines()
    assert len([x for x in lines if x.startswith("downloading")]) <= 11  # a line per tenth, not per block
    assert lines[-2:] == [" 20% Checking bundle", "100% Installing done."]
    assert "\r" not in plain.getvalue()
    tty = io.StringIO()
    p = Progress(tty, tty=True)
    p.install(50, "Copying image to rootfs.1")
    p.end()
    assert "\r" in tty.getvalue() and "[###############...............]" in tty.getvalue()


def test_update_config_section(tmp_path: Path) -> None:
    s = Settings()
    assert s.update.feed_url is None and not s.update.allow_mqtt_install  # off by default
    assert s.update.release_file == Path("/usr/lib/perch/release")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("update: {feed_url: 'https://updates.example.org/feed.json', allow_mqtt_install: true}\n")
    s = load_settings(cfg, environ={})
    assert s.update.feed_url == "https://updates.example.org/feed.json" and s.update.allow_mqtt_install
    for bad, words in (("update: {feed_url: 'ftp://x/feed.json'}", "update.feed_url"),
                       ("update: {check_interval_h: 0}", "update.check_interval_h"),
                       ("update: {feeds: x}", "unknown setting 'update.feeds'")):
        cfg.write_text(bad + "\n")
        with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
            load_settings(cfg, environ={})


def test_home_assistant_state_never_has_nulls_where_strings_belong() -> None:
    # Nothing known: versions left out, not null.
    check_state(state_payload(None, None, None, False, None))
    latest = Release(version="2.0.0", url="https://x/b.raucb", notes_url="https://x/2.0.0.html", summary="New")
    s = state_payload("1.0.0", latest, None, True, 42)
    check_state(s)
    assert s["latest_version"] == "2.0.0" and s["release_url"] == "https://x/2.0.0.html"
    assert s["update_percentage"] == 42
    r = _record(rec.ROLLED_BACK)
    s = state_payload("1.0.0", None, r, False, None)
    check_state(s)
    assert s["latest_version"] == "1.0.0" and s["release_summary"].startswith("rolled back: 2.0.0 did not start")
    long = state_payload("1.0.0", None, None, False, None, error="x" * 400)
    assert len(long["release_summary"]) == 255
    with pytest.raises(ValidationError):
        check_state({**s, "progress": 3})  # Home Assistant refuses keys it does not know


def test_discovery_has_a_command_topic_only_when_installs_are_allowed() -> None:
    assert "command_topic" not in discovery_payload("perch", False)
    allowed = discovery_payload("perch", True)
    assert allowed["command_topic"] == "perch/update/install" and allowed["payload_install"] == "install"


def test_no_update_entity_on_a_pip_install(tmp_path: Path) -> None:
    from perch.daemon.update.service import UpdateService

    class NoPublisher:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"a pip install must not add an update entity ({name})")

    service = UpdateService(Settings(state_dir=tmp_path, update={"release_file": tmp_path / "missing"}))
    service.attach_mqtt(NoPublisher())
    assert service.entity is None
