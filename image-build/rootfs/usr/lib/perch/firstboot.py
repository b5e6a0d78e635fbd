#!/usr/bin/python3
"""Applies perch-settings.txt (and perchd.yaml) from the boot partition: hostname, time zone, Wi-Fi, SSH keys,
daemon configuration. Run by perch-firstboot.service with the system Python (standard library only).

The file is parsed, never sourced: it is written by hand on any OS and may hold anything. Both files are checked
completely before anything changes (perchd.yaml by the daemon's own config loader), so a mistake is refused with
one line on the console and in the journal and the box keeps the settings it had. Once applied, the settings file
is renamed to perch-settings.applied.txt with the secrets blanked, so the Wi-Fi password does not stay readable on
a partition that every card reader mounts.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

SETTINGS = "perch-settings.txt"
APPLIED = "perch-settings.applied.txt"
CONFIG = "perchd.yaml"
SECRETS = {"wifi_password"}
KNOWN = {
    "hostname",
    "timezone",
    "wifi_country",
    "wifi_ssid",
    "wifi_password",
    "wifi_hidden",
    "ssh_authorized_key",
}
HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
COUNTRY = re.compile(r"^[A-Z]{2}$")
WPA_UNIT = "wpa_supplicant@wlan0.service"
# The daemon's interpreter: its config loader is the one authority on what perchd.yaml may hold.
PERCHD_PYTHON = Path("/opt/perchd/venv/bin/python")
CHECK_CONFIG = (
    "import sys\n"
    "from perch.daemon.config import ConfigError, load_settings\n"
    "try:\n"
    "    load_settings(sys.argv[1], environ={})\n"
    "except ConfigError as exc:\n"
    "    sys.exit(str(exc))\n"
)


class SettingsError(ValueError):
    pass


def parse(text: str) -> dict[str, list[str]]:
    """KEY=VALUE lines; '#' comments; keys may repeat (ssh_authorized_key). Unknown keys are an error."""
    values: dict[str, list[str]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip().lstrip("\ufeff")  # Notepad writes a BOM
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        if not sep or key not in KNOWN:
            raise SettingsError(f"line {number}: expected one of {', '.join(sorted(KNOWN))} as KEY=VALUE")
        values.setdefault(key, []).append(value.strip())
    return values


def one(values: dict[str, list[str]], key: str) -> str | None:
    found = values.get(key)
    return found[-1] if found else None


def inside(root: Path, path: Path) -> Path:
    """`path` with a symlink at its end followed within `root`: the image links files that live on the data
    partition (the Wi-Fi configuration) from /etc, and an update must find them there, not a copy in /etc."""
    if path.is_symlink():
        target = Path(os.readlink(path))
        return root / target.relative_to("/") if target.is_absolute() else path.parent / target
    return path


def write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def apply_hostname(root: Path, name: str, live: bool) -> None:
    name = name.lower()
    write(root / "etc/hostname", name + "\n", 0o644)
    hosts = root / "etc/hosts"
    lines = hosts.read_text().splitlines() if hosts.exists() else ["127.0.0.1\tlocalhost"]
    lines = [line for line in lines if not line.startswith("127.0.1.1")] + [f"127.0.1.1\t{name}"]
    write(hosts, "\n".join(lines) + "\n", 0o644)
    if live:
        socket.sethostname(name)


def apply_timezone(root: Path, zone: str) -> None:
    localtime = root / "etc/localtime"
    localtime.unlink(missing_ok=True)
    localtime.symlink_to(Path("/usr/share/zoneinfo") / zone)
    write(root / "etc/timezone", zone + "\n", 0o644)


def check_wifi(values: dict[str, list[str]]) -> None:
    ssid = one(values, "wifi_ssid") or ""
    if not 1 <= len(ssid.encode()) <= 32:
        raise SettingsError("wifi_ssid must be 1 to 32 bytes")
    password = one(values, "wifi_password") or ""
    # wpa_supplicant reads a quoted passphrase up to the last quote, without escapes: only its length and
    # control characters matter.
    if password and not 8 <= len(password.encode()) <= 63:
        raise SettingsError("wifi_password must be 8 to 63 characters (WPA2/WPA3 personal)")
    if any(ord(char) < 32 or ord(char) == 127 for char in password):
        raise SettingsError("wifi_password contains control characters")
    country = (one(values, "wifi_country") or "").upper()
    if country and not COUNTRY.match(country):
        raise SettingsError(f"wifi_country {country!r}: use a two-letter code such as DE or US")


def apply_wifi(root: Path, values: dict[str, list[str]], live: bool) -> None:
    ssid = one(values, "wifi_ssid") or ""
    password = one(values, "wifi_password") or ""
    country = (one(values, "wifi_country") or "").upper()
    hidden = (one(values, "wifi_hidden") or "no").lower() in {"1", "yes", "true", "on"}
    # Hex needs no quoting rules at all, whatever the SSID holds (quotes, '#', UTF-8).
    network = [f"\tssid={ssid.encode().hex()}"]
    if password:
        # WPA2 and WPA3 (SAE) both work from the passphrase; PMF optional so WPA2-only routers still connect.
        network += [
            "\tkey_mgmt=WPA-PSK WPA-PSK-SHA256 SAE",
            f'\tpsk="{password}"',
            "\tieee80211w=1",
        ]
    else:
        network.append("\tkey_mgmt=NONE")
    if hidden:
        network.append("\tscan_ssid=1")
    head = ["ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev", "update_config=0"]
    if country:
        head.append(f"country={country}")
    conf = "\n".join([*head, "", "network={", *network, "}", ""])
    write(inside(root, root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"), conf, 0o600)
    if live:
        # The image starts wpa_supplicant@wlan0 when wlan0 appears and this file exists; wlan0 may have appeared
        # before the file did, so queue the start explicitly (a no-op without wlan0).
        subprocess.run(["systemctl", "restart", "--no-block", WPA_UNIT], check=False)


def apply_ssh_keys(root: Path, keys: list[str]) -> None:
    target = root / "root/.ssh/authorized_keys"
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    existing = target.read_text().splitlines() if target.exists() else []
    lines = existing + [key for key in keys if key not in existing]
    write(target, "\n".join(lines) + "\n", 0o600)


def check_ssh_key(key: str) -> None:
    """ssh-keygen reads the key the way sshd will: a truncated or mangled key line is refused here, not at login."""
    if not key.startswith(("ssh-", "ecdsa-", "sk-")):
        raise SettingsError("ssh_authorized_key must be an OpenSSH public key line (ssh-ed25519 AAAA... name)")
    result = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=key + "\n", capture_output=True, text=True)
    if result.returncode != 0:
        raise SettingsError(f"ssh_authorized_key {key[:24]}...: not a valid OpenSSH public key")


def check_config(source: Path, python: Path) -> None:
    result = subprocess.run([str(python), "-c", CHECK_CONFIG, str(source)], capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise SettingsError(lines[-1] if lines else f"{source}: refused by perchd's config check")


def apply_config(root: Path, source: Path) -> None:
    target = root / "etc/perchd/config.yaml"
    write(target, source.read_text(), 0o640)
    # MQTT passwords and API keys may be in there: root writes it, the daemon's group reads it.
    group = _gid(root, "perchd")
    if group is not None:
        os.chown(target, 0, group)


def _gid(root: Path, name: str) -> int | None:
    group = root / "etc/group"
    for line in group.read_text().splitlines() if group.exists() else []:
        fields = line.split(":")
        if fields[0] == name and len(fields) > 2 and fields[2].isdigit():
            return int(fields[2])
    return None


def validate(values: dict[str, list[str]], root: Path) -> None:
    """Every check before the first change: a typo must not leave a half-configured system."""
    name = one(values, "hostname")
    if name is not None and not HOSTNAME.match(name.lower()):
        raise SettingsError(f"hostname {name!r}: use letters, digits and '-' (at most 63)")
    zone = one(values, "timezone")
    if zone is not None and (".." in zone or not (root / "usr/share/zoneinfo" / zone).is_file()):
        raise SettingsError(f"timezone {zone!r} is not in /usr/share/zoneinfo")
    if "wifi_ssid" in values:
        check_wifi(values)
    elif any(key.startswith("wifi_") for key in values):
        raise SettingsError("wifi_* settings need wifi_ssid")
    for key in values.get("ssh_authorized_key", []):
        check_ssh_key(key)


def redacted(text: str) -> str:
    out = []
    for line in text.splitlines():
        key = line.partition("=")[0].strip().lower()
        out.append(f"{key}=(applied, removed)" if key in SECRETS else line)
    return "\n".join(out) + "\n"


def run(boot: Path, root: Path, live: bool, python: Path = PERCHD_PYTHON) -> list[str]:
    """Apply what the boot partition holds; returns what was done, for the journal."""
    done: list[str] = []
    settings, config = boot / SETTINGS, boot / CONFIG
    # Everything is checked before the first change: a mistake in either file changes nothing at all.
    values: dict[str, list[str]] | None = None
    if settings.exists():
        text = settings.read_text(encoding="utf-8", errors="replace")
        try:
            values = parse(text)
            validate(values, root)
        except SettingsError as exc:
            raise SettingsError(f"{settings}: {exc}") from exc
    if config.exists():
        check_config(config, python)
    if values is not None:
        if name := one(values, "hostname"):
            apply_hostname(root, name, live)
            done.append(f"hostname {name.lower()}")
        if zone := one(values, "timezone"):
            apply_timezone(root, zone)
            done.append(f"timezone {zone}")
        if "wifi_ssid" in values:
            apply_wifi(root, values, live)
            done.append(f"Wi-Fi {one(values, 'wifi_ssid')}")
        if keys := values.get("ssh_authorized_key"):
            apply_ssh_keys(root, keys)
            done.append(f"{len(keys)} SSH key(s)")
        # Written before the original goes, so a power cut never loses the settings silently.
        write(boot / APPLIED, redacted(text), 0o600)
        settings.unlink()
    if config.exists():
        apply_config(root, config)
        shutil.move(config, boot / (CONFIG + ".applied"))
        done.append("perchd configuration")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boot", type=Path, default=Path("/boot/firmware"), help="boot partition mount")
    parser.add_argument("--root", type=Path, default=Path("/"), help="system to configure")
    parser.add_argument("--perchd-python", type=Path, default=PERCHD_PYTHON, help="interpreter with perchd")
    args = parser.parse_args(argv)
    live = args.root.resolve() == Path("/")
    try:
        done = run(args.boot, args.root, live, args.perchd_python)
    except (SettingsError, OSError) as exc:
        # One line (the unit sends it to the console and the journal); nothing was changed and the files stay
        # for the user to fix, so the next boot tries again.
        print(f"perch-firstboot: REFUSED, nothing changed: {exc}", file=sys.stderr)
        return 1
    print("perch-firstboot: applied " + (", ".join(done) if done else "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
