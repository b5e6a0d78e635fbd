"""A real RAUC 1.8 system in a temporary folder: a private system D-Bus (dbus-daemon with a permissive policy),
`rauc service` with file-backed A/B slots and a `custom` boot-loader backend that keeps its state in files, and
bundles signed by throw-away CAs made with openssl. Rebooting is simulated by restarting the service with another
booted slot (RAUC's --override-boot-slot), a new boot id and the release file of that slot.

Needs root (RAUC loop-mounts plain bundles), Debian's rauc, squashfs-tools and dbus.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

COMPATIBLE = "perch-arm64"
SLOT_BYTES = 1 << 20
IMAGE_BYTES = 256 << 10

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

# The boot loader's state in files: primary slot, good/bad per slot, every call in `calls`. With a file `slow`
# present, marking a slot takes a while, which keeps RAUC busy long enough to try a second install.
BACKEND = """#!/bin/sh
d={state}
echo "$*" >> "$d/calls"
case "$1" in
  get-primary) cat "$d/primary" 2>/dev/null || echo A ;;
  set-primary) echo "$2" > "$d/primary"; echo good > "$d/state.$2" ;;
  get-state) cat "$d/state.$2" 2>/dev/null || echo good ;;
  set-state) [ -e "$d/slow" ] && sleep 3; echo "$3" > "$d/state.$2" ;;
  *) exit 1 ;;
esac
"""

SYSTEM_CONF = """[system]
compatible={compatible}
bootloader=custom
data-directory={root}/data
mountprefix={root}/mnt
bundle-formats=plain

[handlers]
bootloader-custom-backend={root}/bootloader.sh

[keyring]
path={root}/keys/ca.cert.pem

[slot.rootfs.0]
device={root}/slot-a.img
type=raw
bootname=A

[slot.rootfs.1]
device={root}/slot-b.img
type=raw
bootname=B
"""


def rauc_missing() -> str | None:
    if os.geteuid() != 0:
        return "RAUC tests need root (RAUC loop-mounts bundles)"
    for tool in ("rauc", "dbus-daemon", "dbus-send", "mksquashfs", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (./install-deps.sh --tests installs it)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices on this machine"
    return None


def _ssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class SigningKey:
    ca: Path
    cert: Path
    key: Path


def make_signing_key(folder: Path, name: str) -> SigningKey:
    """A CA and a signing certificate below it (EC keys: fast to make)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (folder / f"{name}.{n}" for n in ("ca.key", "ca.cert.pem", "key.pem", "csr",
                                                                    "cert.pem"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _ssl("req", "-x509", *ec, "-days", "2", "-subj", f"/CN={name} CA", "-keyout", str(ca_key), "-out", str(ca))
    _ssl("req", *ec, "-subj", f"/CN={name} signer", "-keyout", str(key), "-out", str(csr))
    _ssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
         "-out", str(cert))
    return SigningKey(ca, cert, key)


def make_bundle(out: Path, signer: SigningKey, version: str, compatible: str = COMPATIBLE,
                seed: str | None = None) -> tuple[Path, bytes]:
    """A plain RAUC bundle with one raw rootfs image; returns (bundle, image bytes)."""
    content = out.parent / f".{out.name}.d"
    shutil.rmtree(content, ignore_errors=True)
    content.mkdir(parents=True)
    image = hashlib.sha256((seed or version).encode()).digest() * (IMAGE_BYTES // 32)
    (content / "rootfs.img").write_bytes(image)
    (content / "manifest.raucm").write_text(
        f"[update]\ncompatible={compatible}\nversion={version}\n\n[image.rootfs]\nfilename=rootfs.img\n")
    out.unlink(missing_ok=True)
    subprocess.run(["rauc", "bundle", "--cert", str(signer.cert), "--key", str(signer.key), str(content), str(out)],
                   check=True, capture_output=True)
    shutil.rmtree(content)
    return out, image


class RaucSystem:
    """Start with `start()`; `env` holds the variables a client (the daemon, `perchd update`) needs."""

    def __init__(self, root: Path, keyring: SigningKey, installed_version: str = "1.0.0") -> None:
        self.root = root
        self.boot = root / "boot"
        for d in (root / "keys", root / "data", root / "mnt", self.boot):
            d.mkdir(parents=True, exist_ok=True)
        shutil.copy(keyring.ca, root / "keys" / "ca.cert.pem")
        self.socket = root / "bus.sock"
        (root / "bus.conf").write_text(BUS_CONF.format(socket=self.socket))
        backend = root / "bootloader.sh"
        backend.write_text(BACKEND.format(state=self.boot))
        backend.chmod(0o755)
        self.conf = root / "system.conf"
        self.conf.write_text(SYSTEM_CONF.format(compatible=COMPATIBLE, root=root))
        self.slots = {"A": root / "slot-a.img", "B": root / "slot-b.img"}
        for path in self.slots.values():
            path.write_bytes(b"\0" * SLOT_BYTES)
        self.release_file = root / "release"
        self.boot_id_file = root / "boot_id"
        self.versions = {"A": installed_version}
        self.booted = "A"
        self._set_booted("A")
        self.bus: subprocess.Popen[bytes] | None = None
        self.service: subprocess.Popen[bytes] | None = None
        self.env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.socket}"}

    def _set_booted(self, bootname: str) -> None:
        self.booted = bootname
        self.release_file.write_text(f'NAME="Perch"\nVERSION={self.versions.get(bootname, "0")}\n')
        self.boot_id_file.write_text(str(uuid.uuid4()) + "\n")

    def start(self) -> RaucSystem:
        log = (self.root / "dbus.log").open("ab")
        self.bus = subprocess.Popen(["dbus-daemon", "--config-file", str(self.root / "bus.conf"), "--nofork"],
                                    stdout=log, stderr=log)
        self._wait(lambda: self.socket.exists(), "the private D-Bus socket")
        self._start_service()
        return self

    def _start_service(self) -> None:
        log = (self.root / "rauc.log").open("ab")
        self.service = subprocess.Popen(
            ["rauc", "service", f"--conf={self.conf}", f"--override-boot-slot={self.booted}"],
            env={**os.environ, **self.env}, stdout=log, stderr=log)
        self._wait(self._service_on_bus, "rauc service on the bus")

    def _service_on_bus(self) -> bool:
        if self.service is not None and self.service.poll() is not None:
            raise RuntimeError(f"rauc service exited: {(self.root / 'rauc.log').read_text()[-2000:]}")
        out = subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus",
                              "/org/freedesktop/DBus", "org.freedesktop.DBus.NameHasOwner",
                              "string:de.pengutronix.rauc"], env={**os.environ, **self.env}, capture_output=True,
                             text=True)
        return "boolean true" in out.stdout

    @staticmethod
    def _wait(pred: object, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def reboot(self, into: str) -> None:
        """A reboot that the boot loader ends in slot `into` (the new one, or the old one after a fallback)."""
        self._stop_service()
        self._set_booted(into)
        self._start_service()

    def record_installed(self, bootname: str, version: str) -> None:
        """What the new slot's release file will say once it runs."""
        self.versions[bootname] = version

    def calls(self) -> list[str]:
        path = self.boot / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def slot_bytes(self, bootname: str, n: int = IMAGE_BYTES) -> bytes:
        with self.slots[bootname].open("rb") as fh:
            return fh.read(n)

    def _stop_service(self) -> None:
        if self.service is not None and self.service.poll() is None:
            self.service.send_signal(signal.SIGTERM)
            try:
                self.service.wait(10)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait(10)
        self.service = None

    def _unmount_leftovers(self) -> None:
        """A service stopped mid-install leaves the bundle mounted under our mount prefix: never leak it."""
        prefix = str(self.root / "mnt") + "/"
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for target in reversed([m for m in mounts if m.startswith(prefix)]):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)

    def stop(self) -> None:
        self._stop_service()
        self._unmount_leftovers()
        if self.bus is not None and self.bus.poll() is None:
            self.bus.terminate()
            self.bus.wait(10)
        self.bus = None
