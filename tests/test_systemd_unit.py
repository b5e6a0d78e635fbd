"""perchd.service as systemd itself reads it: verify must be silent, offline security exposure at most 2.5.

systemd-analyze comes from the Debian package ``systemd`` (.ci/apt.d/systemd.txt); without it these tests skip
(and fail under CI=true, which installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.services import missing_service, needs_service

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "perchd.service"
IMAGE_UNITS = sorted((REPO / "image-build" / "rootfs" / "usr/lib/systemd/system").glob("*.service"))
SYSUSERS = REPO / "systemd" / "perchd.sysusers.conf"
UDEV = REPO / "systemd" / "60-perchd-accelerators.rules"
JETSON_DROPIN = REPO / "image-build" / "boards" / "jetson" / "perchd.service.d" / "jetson.conf"
HOST_UNITS = Path("/usr/lib/systemd/system")

analyze = shutil.which("systemd-analyze")
needs_analyze = needs_service(None if analyze else "systemd-analyze missing (apt package systemd)")


def settings(unit: Path) -> dict[str, list[str]]:
    """Key -> values of a unit file (keys repeat, e.g. DeviceAllow=), ignoring sections and comments."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def fake_root(tmp_path: Path, units: list[Path], dropins: tuple[Path, ...] = ()) -> Path:
    """A root holding the host's systemd units, the units under test and stand-ins for their executables.

    ``verify`` checks that ExecStart= binaries exist and that targets such as sysinit.target resolve, so it runs
    against this root instead of the host, where /opt/perchd is not installed.
    """
    root = tmp_path / "root"
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in units:
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
        for command in settings(unit).get("ExecStart", []) + settings(unit).get("ExecStartPre", []):
            binary = root / command.lstrip("-@:+!").split()[0].lstrip("/")
            binary.parent.mkdir(parents=True, exist_ok=True)
            binary.write_text("#!/bin/sh\n")
            binary.chmod(0o755)
    for dropin in dropins:
        target = root / "etc/systemd/system" / dropin.parent.name / dropin.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(dropin, target)
    return root


@needs_analyze
@pytest.mark.parametrize("unit", [UNIT, *IMAGE_UNITS], ids=lambda p: p.name)
def test_verify_prints_nothing(tmp_path: Path, unit: Path) -> None:
    if not HOST_UNITS.is_dir():
        missing_service("no systemd unit tree on this host (apt package systemd)")
    root = fake_root(tmp_path, [unit])
    assert analyze is not None
    # verify exits 0 on unknown or misspelled keys and only prints them: any output is a failure.
    done = subprocess.run([analyze, f"--root={root}", "verify", unit.name], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_analyze
def test_jetson_dropin_verifies(tmp_path: Path) -> None:
    if not HOST_UNITS.is_dir():
        missing_service("no systemd unit tree on this host (apt package systemd)")
    root = fake_root(tmp_path, [UNIT], (JETSON_DROPIN,))
    assert analyze is not None
    done = subprocess.run([analyze, f"--root={root}", "verify", UNIT.name], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@needs_analyze
def test_offline_security_exposure() -> None:
    assert analyze is not None
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=25", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The threshold is on the 0-100 scale; the summary line prints it divided by ten.
    level = re.search(r"Overall exposure level for perchd\.service: ([0-9.]+)", done.stdout)
    assert level is not None, done.stdout + done.stderr
    assert done.returncode == 0, done.stdout
    assert float(level.group(1)) <= 2.5


def test_unit_contract() -> None:
    unit = settings(UNIT)
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert int(unit["WatchdogSec"][0]) > 0
    assert unit["Restart"] == ["on-failure"]
    assert "StartLimitBurst" in unit and "StartLimitIntervalSec" in unit
    assert unit["User"] == ["perchd"]
    assert set(unit["SupplementaryGroups"][0].split()) == {"video", "render", "plugdev"}
    assert unit["DevicePolicy"] == ["closed"]
    assert unit["CapabilityBoundingSet"] == [""]
    for key in ("StateDirectory", "CacheDirectory", "ConfigurationDirectory", "LogsDirectory"):
        assert unit[key] == ["perchd"]
    # Accelerators need their device nodes and JIT runtimes need W+X pages.
    assert "PrivateDevices" not in unit
    assert "MemoryDenyWriteExecute" not in unit
    allowed = " ".join(unit["DeviceAllow"])
    for device in ("char-drm", "char-video4linux", "char-media", "char-dma_heap", "char-apex", "char-hailo"):
        assert device in allowed
    assert "char-usb_device" in allowed


def test_sysusers_creates_user_and_groups() -> None:
    entries = [line.split() for line in SYSUSERS.read_text().splitlines() if line and not line.startswith("#")]
    assert ["u", "perchd"] in [entry[:2] for entry in entries]
    groups = {entry[1] for entry in entries if entry[0] == "g"}
    assert set(settings(UNIT)["SupplementaryGroups"][0].split()) <= groups


def test_udev_rules_cover_coral() -> None:
    rules = UDEV.read_text()
    for vendor, product in (("1a6e", "089a"), ("18d1", "9302")):
        assert f'ATTR{{idVendor}}=="{vendor}", ATTR{{idProduct}}=="{product}"' in rules
    assert 'SUBSYSTEM=="apex"' in rules
