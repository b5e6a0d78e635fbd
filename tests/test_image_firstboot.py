"""The image's first-boot settings (image-build/rootfs/usr/lib/perch/firstboot.py) applied to a scratch root."""

from __future__ import annotations

import importlib.util
import stat
import subprocess
import sys
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


def make_key(tmp_path: Path, name: str = "me@laptop") -> str:
    """A real public key line: the settings check reads keys with ssh-keygen, as sshd would."""
    key = tmp_path / f"key-{len(list(tmp_path.glob('key-*')))}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key.with_suffix(".pub").read_text().strip()


def apply(root: Path, boot: Path) -> int:
    # perchd.yaml is checked by the daemon's own loader, which this test interpreter has installed.
    return firstboot.main(["--root", str(root), "--boot", str(boot), "--perchd-python", sys.executable])


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
ssh_authorized_key={key}
"""


def test_applies_everything_and_blanks_the_password(system: tuple[Path, Path], tmp_path: Path) -> None:
    root, boot = system
    key = make_key(tmp_path)
    (boot / "perch-settings.txt").write_text(SETTINGS.format(key=key))
    (boot / "perchd.yaml").write_text("port: 8080\n")

    assert apply(root, boot) == 0

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

    keys = (root / "root/.ssh/authorized_keys").read_text()
    assert keys == key + "\n"
    assert (root / "etc/perchd/config.yaml").read_text() == "port: 8080\n"

    assert not (boot / "perch-settings.txt").exists()
    applied = (boot / "perch-settings.applied.txt").read_text()
    assert 'pa"ss' not in applied and "hostname=Garage-Cam" in applied
    assert (boot / "perchd.yaml.applied").exists() and not (boot / "perchd.yaml").exists()


def test_rerun_does_not_duplicate_keys(system: tuple[Path, Path], tmp_path: Path) -> None:
    root, boot = system
    key = make_key(tmp_path, "me")
    for _ in range(2):
        (boot / "perch-settings.txt").write_text(f"ssh_authorized_key={key}\n")
        assert apply(root, boot) == 0
    assert (root / "root/.ssh/authorized_keys").read_text() == key + "\n"


@pytest.mark.parametrize(
    "text",
    [
        "hostname=under_score\nwifi_ssid=x\n",
        "hostname=ok\ntimezone=Mars/Olympus\n",
        "hostname=ok\nwifi_ssid=net\nwifi_password=short\n",
        "hostname=ok\nwifi_password=without-an-ssid\n",
        "hostname=ok\nwifi_ssid=net\nwifi_country=Germany\n",
        "hostname=ok\nssh_authorized_key=not a key\n",
        # The right prefix, but the key itself is cut short (a copy-paste accident).
        "hostname=ok\nssh_authorized_key=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample me@laptop\n",
        "hostname=ok\nwifi_pasword=typo\n",
    ],
)
def test_invalid_settings_change_nothing(
    system: tuple[Path, Path], text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root, boot = system
    (boot / "perch-settings.txt").write_text(text)
    assert apply(root, boot) == 1
    # Validation comes first: no half-applied system, and the file stays for the user to fix.
    assert not (root / "etc/hostname").exists()
    assert not (root / "etc/wpa_supplicant").exists()
    assert (boot / "perch-settings.txt").read_text() == text
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("perch-firstboot: REFUSED") and "perch-settings.txt" in err


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("port: 8080\nbogus_key: 1\n", "unknown setting 'bogus_key'"),
        ("port: [8080\n", "not valid YAML"),
        ("mqtt:\n  host: 10.0.2.2\n  prot: 1883\n", "unknown setting 'mqtt.prot'"),
    ],
)
def test_bad_config_blocks_both_files(
    system: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, message: str
) -> None:
    root, boot = system
    (boot / "perch-settings.txt").write_text(f"hostname=garage\nssh_authorized_key={make_key(tmp_path)}\n")
    (boot / "perchd.yaml").write_text(config)
    assert apply(root, boot) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "perchd.yaml" in err
    # The settings file was fine, but nothing of it is applied while its companion is wrong.
    assert not (root / "etc/hostname").exists() and not (root / "root/.ssh").exists()
    assert not (root / "etc/perchd").exists()
    assert (boot / "perchd.yaml").read_text() == config and (boot / "perch-settings.txt").exists()


def test_wifi_follows_the_link_to_the_data_partition(system: tuple[Path, Path], tmp_path: Path) -> None:
    root, boot = system
    # The image links /etc's Wi-Fi file to /data, which outlives a root-slot update.
    (root / "etc/wpa_supplicant").mkdir()
    (root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf").symlink_to("/data/network/wpa_supplicant-wlan0.conf")
    (boot / "perch-settings.txt").write_text("wifi_ssid=Cafe\n")
    assert apply(root, boot) == 0
    assert "key_mgmt=NONE" in (root / "data/network/wpa_supplicant-wlan0.conf").read_text()
    assert (root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf").is_symlink()


def test_open_network_and_nothing_to_do(system: tuple[Path, Path]) -> None:
    root, boot = system
    assert apply(root, boot) == 0
    (boot / "perch-settings.txt").write_text("wifi_ssid=Cafe\nwifi_hidden=yes\n")
    assert apply(root, boot) == 0
    conf = (root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf").read_text()
    assert "key_mgmt=NONE" in conf and "scan_ssid=1" in conf and "country=" not in conf
