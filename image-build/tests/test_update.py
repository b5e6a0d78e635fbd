"""Issue 14: updates with RAUC between root slots A and B, on the card test_boot.py left running on slot A.

(d) a bundle signed by a stranger's CA is refused before anything is written; (a) a newer good bundle, reboot,
the new version serves with faces, settings and SSH keys kept; (b) a bundle whose perchd cannot start: the box
falls back to the previous slot by itself and reports the failed update; (c) a power cut while RAUC writes: the
old slot boots, intact. Updates go in as a user would install them: `perchd update install URL` over SSH, the
bundle served by the host. Bundles are made here from the build's slot image and throwaway keys (bundle.sh, as
build.sh makes the release).
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from vm import Vm, log

from conftest import REPO, Broker, Files

BUNDLE_SH = REPO / "image-build/rauc/bundle.sh"
MAKE_KEYS = REPO / "image-build/rauc/make-keys.sh"
SITE = "/opt/perchd/venv/lib/python3.11/site-packages"
BOX = "perch-ci"  # the host name test_boot.py gave the box: its MQTT topics are perch/<box>/...


def image_version(image_dir: Path) -> str:
    bundles = sorted(image_dir.glob("perch-*-arm64.raucb"))
    assert bundles, f"no release bundle in {image_dir}"
    return bundles[0].name.removeprefix("perch-").removesuffix("-arm64.raucb")


def derive(image_dir: Path, work: Path, name: str, version: str, edits: dict[str, str]) -> Path:
    """A bundle from the build's slot image with a few files replaced (debugfs: no loop device, no mount)."""
    ext4 = work / f"{name}.ext4"
    subprocess.run(["cp", "--sparse=always", str(image_dir / "perch-arm64-rootfs.ext4"), str(ext4)], check=True)
    commands = []
    for n, (path, text) in enumerate({"/usr/lib/perch/release": f"VERSION={version}\n", **edits}.items()):
        local = work / f"{name}-{n}"
        local.write_text(text)
        commands += [f"rm {path}", f"write {local} {path}", f"sif {path} mode 0100644",
                     f"sif {path} uid 0", f"sif {path} gid 0"]
    script = work / f"{name}.debugfs"
    script.write_text("\n".join(commands) + "\n")
    subprocess.run(["debugfs", "-w", "-f", str(script), str(ext4)], check=True, capture_output=True)
    out = work / "www" / f"perch-{version}-arm64.raucb"
    subprocess.run([str(BUNDLE_SH), "--rootfs", str(ext4), "--version", version,
                    "--keys", str(image_dir / "throwaway-keys"), "--out", str(out)], check=True)
    ext4.unlink()
    return out


@pytest.fixture(scope="module")
def bundles(image_dir: Path, work: Path, files: Files, timings: dict[str, float]) -> dict[str, Path]:
    started = time.monotonic()
    version = image_version(image_dir)
    made = {
        "good": derive(image_dir, work, "good", f"{version}.1", {}),
        # perchd dies on import: the way a broken release looks from the outside.
        "bad": derive(image_dir, work, "bad", f"{version}.2", {
            f"{SITE}/perch/daemon/__init__.py": 'raise ImportError("perch rollback test: broken on purpose")\n'}),
    }
    stranger_keys = work / "stranger-keys"
    subprocess.run([str(MAKE_KEYS), str(stranger_keys), "Stranger"], check=True)
    made["stranger"] = work / "www" / "stranger.raucb"
    # The release bundle with its signature replaced by one from a CA the box does not know.
    conf = work / "resign.conf"
    conf.write_text("[system]\ncompatible=perch-arm64\nbootloader=noop\n[keyring]\n"
                    f"path={image_dir}/throwaway-keys/ca.cert.pem\ncheck-purpose=codesign\n")
    subprocess.run(["rauc", f"--conf={conf}", "resign", f"--cert={stranger_keys}/signing.cert.pem",
                    f"--key={stranger_keys}/signing.key.pem", f"--keyring={image_dir}/throwaway-keys/ca.cert.pem",
                    f"--signing-keyring={stranger_keys}/ca.cert.pem",
                    str(image_dir / f"perch-{version}-arm64.raucb"), str(made["stranger"])],
                   check=True, capture_output=True)
    timings["test bundles (good, bad, stranger) on the host"] = time.monotonic() - started
    return made


def install(vm: Vm, files: Files, bundle: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`perchd update install URL`: the daemon's CLI downloads to the data partition, then RAUC writes the slot."""
    started = time.monotonic()
    result = vm.ssh(f"perchd update install {files.url(bundle.name)}", check=False, timeout=1800)
    log(f"perchd update install {bundle.name} ({bundle.stat().st_size / 2**20:.0f} MiB): exit {result.returncode}"
        f" after {time.monotonic() - started:.0f} s: {result.stdout.strip() or result.stderr.strip().splitlines()[-1]}")
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def last_update(vm: Vm) -> dict:
    """What the daemon reports at /v1/status/update about the last update."""
    return vm.get("/v1/status/update")["update"]["last_update"] or {}


def release(vm: Vm) -> str:
    return vm.ssh("cat /usr/lib/perch/release").stdout.strip().removeprefix("VERSION=")


def faces(vm: Vm) -> list[str]:
    return vm.post("/v1/vision/face/list", {}, {})["faces"]


def no_failed_units(vm: Vm) -> None:
    state = vm.wait_boot_finished()
    failed = vm.ssh("systemctl --failed --plain --no-legend").stdout.strip()
    assert state == "running" and not failed, f"{state}: {failed}"


@pytest.fixture(scope="module")
def before(vm: Vm) -> dict[str, object]:
    """What must survive every update, as the card is before the first one."""
    vm.wait_ssh()
    return {
        "faces": sorted(faces(vm)),
        "hostname": vm.ssh("hostname").stdout.strip(),
        "timezone": vm.ssh("timedatectl show -p Timezone --value").stdout.strip(),
        "machine-id": vm.ssh("cat /etc/machine-id").stdout.strip(),
        "version": release(vm),
    }


def test_d_stranger_bundle_is_refused_before_writing(vm: Vm, files: Files, bundles: dict[str, Path],
                                                      before: dict[str, object]) -> None:
    assert vm.rauc_status()["booted"] == "A"
    slot_b = "head -c 64M /dev/disk/by-partuuid/50455243-03 | sha256sum"
    fingerprint = vm.ssh(f"{slot_b}; grub-editenv /boot/firmware/EFI/perch/grubenv list").stdout
    result = install(vm, files, bundles["stranger"], check=False)
    assert result.returncode != 0
    assert "signature" in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
    assert vm.ssh(f"{slot_b}; grub-editenv /boot/firmware/EFI/perch/grubenv list").stdout == fingerprint


def test_a_good_update(vm: Vm, files: Files, bundles: dict[str, Path], before: dict[str, object],
                       timings: dict[str, float]) -> None:
    new = bundles["good"].name.removeprefix("perch-").removesuffix("-arm64.raucb")
    started = time.monotonic()
    install(vm, files, bundles["good"])
    timings["(a) perchd update install URL (download + RAUC writing slot B)"] = time.monotonic() - started
    env = vm.grubenv()
    assert env["ORDER"].split()[0] == "B" and env["B_TRIAL"] == "1", env
    timings["(a) reboot into the new slot: command to REST ready"] = vm.reboot()
    vm.wait_ssh()  # strict host key checking: the box's SSH identity came along
    assert vm.rauc_status()["booted"] == "B"
    assert release(vm) == new
    assert vm.get("/v1/status/version").get("image_version") == new
    log(f"(a) slot B serves image version {new}; last update: {last_update(vm).get('summary')}")
    assert last_update(vm).get("state") == "updated"
    no_failed_units(vm)
    env = vm.grubenv()
    assert (env["B_OK"], env["B_TRY"], env["B_TRIAL"]) == ("1", "0", "0"), env
    assert sorted(faces(vm)) == before["faces"]
    assert vm.ssh("hostname").stdout.strip() == before["hostname"]
    assert vm.ssh("timedatectl show -p Timezone --value").stdout.strip() == before["timezone"]
    assert vm.ssh("cat /etc/machine-id").stdout.strip() == before["machine-id"]


def test_b_broken_update_falls_back(vm: Vm, files: Files, broker: Broker, bundles: dict[str, Path],
                                    before: dict[str, object], timings: dict[str, float]) -> None:
    good = release(vm)
    install(vm, files, bundles["bad"])
    assert vm.grubenv()["ORDER"].split()[0] == "A"
    console_start = len(vm.console())
    # Two boots of slot A where perchd never gets ready, each ended by perch-slot-check; then GRUB starts B.
    timings["(b) broken update: reboot until the old slot serves again"] = vm.reboot(timeout=1800)
    vm.wait_ssh()
    tries = vm.console()[console_start:].count("Perch: root slot A")
    log(f"(b) slot A started {tries} times, then the box came back on B")
    assert tries == 2
    assert vm.rauc_status()["booted"] == "B"
    assert release(vm) == good
    no_failed_units(vm)
    env = vm.grubenv()
    assert (env["A_OK"], env["A_TRIAL"]) == ("0", "0"), env
    slots = {s["bootname"]: s for group in vm.rauc_status()["slots"] for s in group.values()}
    assert slots["A"]["boot_status"] == "bad"
    assert sorted(faces(vm)) == before["faces"]
    report = vm.ssh("journalctl -b -o cat -u perch-slot-check").stdout
    assert "slot A failed its trial" in report, report
    # The failed update is reported: status route, `perchd update status`, MQTT and Home Assistant's entity.
    last = last_update(vm)
    log(f"(b) /v1/status/update: {last.get('summary')}")
    assert last.get("state") == "rolled-back", last
    assert "rolled back" in vm.ssh("perchd update status").stdout
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and b"rolled" not in broker.topics(f"perch/{BOX}/update/").get(
            f"perch/{BOX}/update/state", b""):
        time.sleep(1)
    assert b"rolled" in broker.topics(f"perch/{BOX}/update/").get(f"perch/{BOX}/update/state", b"")
    assert any(t.startswith("homeassistant/update/") and t.endswith("/config") for t in broker.topics("homeassistant/"))


def test_c_power_cut_while_writing(vm: Vm, files: Files, bundles: dict[str, Path], before: dict[str, object],
                                   timings: dict[str, float]) -> None:
    good = release(vm)
    update = subprocess.Popen(["ssh", *vm.ssh_args(), "root@127.0.0.1",
                               f"perchd update install {files.url(bundles['good'].name)}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    copying = threading.Event()

    def watch() -> None:
        assert update.stdout is not None
        for line in update.stdout:
            if "Copying image" in line:
                copying.set()

    threading.Thread(target=watch, daemon=True).start()
    assert copying.wait(timeout=900), "RAUC never started writing"
    time.sleep(5)
    vm.kill()
    update.wait(timeout=60)
    log("(c) power cut while RAUC was writing slot A")
    vm.start()
    timings["(c) after a power cut during the install: power-on to REST ready"] = vm.wait_ready()
    vm.wait_ssh()
    assert vm.rauc_status()["booted"] == "B"
    assert release(vm) == good
    no_failed_units(vm)
    assert vm.grubenv()["A_OK"] == "0"
    assert sorted(faces(vm)) == before["faces"]
    # The daemon's record of the interrupted install survived the cut and says so.
    last = last_update(vm)
    log(f"(c) /v1/status/update: {last.get('summary')}")
    assert (last.get("state"), last.get("error_code")) == ("failed", "interrupted"), last
