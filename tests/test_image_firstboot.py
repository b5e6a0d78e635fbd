"""The image's first-boot settings (image-build/rootfs/usr/lib/perch/firstboot.py) applied to a scratch root."""

from __future__ import annotations

import importlib.util
import stat
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "image-build/rootfs/usr/lib/perch/firstboot.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("perch_firstboot", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


firstboot = load()


@pytest.fixture
def system(tmp_path: Path) -> tuple[Path, Path]:
    root, boot = tmp_path / "root", tmp_path / "boot"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tperch\n")
    (root / "usr/share/zoneinfo/Europe").mkdir(parents=True)
    (root / "usr/share/zoneinfo/Europe/Berlin").write_bytes(b"TZif")
    boot.mkdir()
    return root, boot


SETTINGS = """\ufeff# written on Windows
hostname=Garage-Cam
timezone=Europe/Berlin
wifi_country=de
wifi_ssid=Home "5G" #2
wifi_password=pa"ss word#1
ssh_authorized_key=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample me@laptop
"""


def test_applies_everything_and_blanks_the_password(system: tuple[Path, Path]) -> None:
    root, boot = system
    (boot / "perch-settings.txt").write_text(SETTINGS)
    (boot / "perchd.yaml").write_text("port: 8080\n")

    assert firstboot.main(["--root", str(root), "--boot", str(boot)]) == 0

    assert (root / "etc/hostname").read_text() == "garage-cam\n"
    hosts = (root / "etc/hosts").read_text().splitlines()
    assert "127.0.1.1\tgarage-cam" in hosts and "127.0.1.1\tperch" not in hosts
    assert (root / "etc/localtime").readlink() == Path("/usr/share/zoneinfo/Europe/Berlin")

    wpa = root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
    assert stat.S_IMODE(wpa.stat().st_mode) == 0o600
    conf = wpa.read_text()
    assert "country=DE" in conf
    assert "ssid=" + b'Home "5G" #2'.hex() in conf
    # wpa_supplicant takes a quoted passphrase up to the last quote, so inner quotes need no escaping.
    assert '\tpsk="pa"ss word#1"' in conf
    link = root / "etc/systemd/system/multi-user.target.wants/wpa_supplicant@wlan0.service"
    assert link.is_symlink()

    keys = (root / "root/.ssh/authorized_keys").read_text()
    assert keys.startswith("ssh-ed25519 ")
    assert (root / "etc/perchd/config.yaml").read_text() == "port: 8080\n"

    assert not (boot / "perch-settings.txt").exists()
    applied = (boot / "perch-settings.applied.txt").read_text()
    assert 'pa"ss' not in applied and "hostname=Garage-Cam" in applied
    assert (boot / "perchd.yaml.applied").exists() and not (boot / "perchd.yaml").exists()


def test_rerun_does_not_duplicate_keys(system: tuple[Path, Path]) -> None:
    root, boot = system
    line = "ssh_authorized_key=ssh-ed25519 AAAAkey me\n"
    for _ in range(2):
        (boot / "perch-settings.txt").write_text(line)
        assert firstboot.main(["--root", str(root), "--boot", str(boot)]) == 0
    assert (root / "root/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAAkey me\n"


@pytest.mark.parametrize(
    "text",
    [
        "hostname=under_score\nwifi_ssid=x\n",
        "hostname=ok\ntimezone=Mars/Olympus\n",
        "hostname=ok\nwifi_ssid=net\nwifi_password=short\n",
        "hostname=ok\nwifi_password=without-an-ssid\n",
        "hostname=ok\nwifi_ssid=net\nwifi_country=Germany\n",
        "hostname=ok\nssh_authorized_key=not a key\n",
        "hostname=ok\nwifi_pasword=typo\n",
    ],
)
def test_invalid_settings_change_nothing(system: tuple[Path, Path], text: str) -> None:
    root, boot = system
    (boot / "perch-settings.txt").write_text(text)
    assert firstboot.main(["--root", str(root), "--boot", str(boot)]) == 1
    # Validation comes first: no half-applied system, and the file stays for the user to fix.
    assert not (root / "etc/hostname").exists()
    assert not (root / "etc/wpa_supplicant").exists()
    assert (boot / "perch-settings.txt").read_text() == text


def test_open_network_and_nothing_to_do(system: tuple[Path, Path]) -> None:
    root, boot = system
    assert firstboot.main(["--root", str(root), "--boot", str(boot)]) == 0
    (boot / "perch-settings.txt").write_text("wifi_ssid=Cafe\nwifi_hidden=yes\n")
    assert firstboot.main(["--root", str(root), "--boot", str(boot)]) == 0
    conf = (root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf").read_text()
    assert "key_mgmt=NONE" in conf and "scan_ssid=1" in conf and "country=" not in conf
