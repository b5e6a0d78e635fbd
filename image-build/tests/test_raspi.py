"""The Raspberry Pi side of the same image: the boot partition as the Pi firmware reads it, then (when qemu's
`raspi3b` machine is there) the card booted the Pi way: U-Boot from the card, its EFI loader starting the same
GRUB, slot A's kernel with the Pi 3's device tree, up to a login prompt on the mini UART.

qemu cannot run the Pi's GPU firmware, so it starts U-Boot directly with the device tree the firmware would have
loaded (config.txt's job on a real board, checked in the first test). The Pi 3 has no network device in qemu.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from vm import BOOT_OFFSET, log

PI_DTBS = ["bcm2837-rpi-3-b.dtb", "bcm2837-rpi-3-b-plus.dtb", "bcm2837-rpi-zero-2-w.dtb", "bcm2711-rpi-4-b.dtb",
           "bcm2711-rpi-400.dtb", "bcm2711-rpi-cm4-io.dtb"]


def boot_file(image: Path, name: str, dest: Path) -> Path:
    target = dest / name.replace("/", "_")
    subprocess.run(["mcopy", "-o", "-i", f"{image}@@{BOOT_OFFSET}", f"::{name}", str(target)], check=True)
    return target


def test_pi_boot_partition(image_dir: Path, tmp_path: Path) -> None:
    image = image_dir / "perch-arm64.img"
    listing = subprocess.run(["mdir", "-b", "-/", "-i", f"{image}@@{BOOT_OFFSET}", "::"],
                             capture_output=True, text=True, check=True).stdout
    names = {line.strip().removeprefix("::/") for line in listing.splitlines()}
    # Pi 3 (bootcode.bin, start.elf) and Pi 4 (start4.elf) firmware, U-Boot, the loader and its chooser.
    for name in ["bootcode.bin", "start.elf", "fixup.dat", "start4.elf", "fixup4.dat", "u-boot.bin",
                 "EFI/BOOT/BOOTAA64.EFI", "EFI/perch/grub.cfg", "EFI/perch/grubenv", "perch-settings.txt.example",
                 *PI_DTBS]:
        assert name in names, f"{name} missing on PERCHBOOT"
    # Written by raspi-firmware's own hook (KERNEL=u-boot.bin in /etc/default/raspi-firmware).
    config = boot_file(image, "config.txt", tmp_path).read_text().splitlines()
    for line in ["arm_64bit=1", "enable_uart=1", "upstream_kernel=1", "kernel=u-boot.bin"]:
        assert line in config, f"config.txt lacks {line}"
    assert not any(line.startswith("initramfs") for line in config), "U-Boot needs no initramfs from the firmware"
    cmdline = boot_file(image, "cmdline.txt", tmp_path).read_text()
    assert "rootwait" in cmdline
    env = boot_file(image, "EFI/perch/grubenv", tmp_path).read_bytes()
    assert env.startswith(b"# GRUB Environment Block") and len(env) == 1024
    assert b"ORDER=A B" in env and b"A_OK=1" in env and b"B_OK=0" in env
    u_boot = boot_file(image, "u-boot.bin", tmp_path).read_bytes()
    assert b"U-Boot" in u_boot
    efi = boot_file(image, "EFI/BOOT/BOOTAA64.EFI", tmp_path).read_bytes()
    assert efi[:2] == b"MZ" and b"arm64-efi" in efi


@pytest.mark.skipif(shutil.which("qemu-system-aarch64") is None, reason="qemu-system-arm is not installed")
def test_raspi3b_boots_to_login(image_dir: Path, tmp_path: Path, timings: dict[str, float]) -> None:
    image = image_dir / "perch-arm64.img"
    card = tmp_path / "sd.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(card)], check=True)
    # qemu's SD card model takes only power-of-two sizes.
    size = 1 << (card.stat().st_size - 1).bit_length()
    subprocess.run(["truncate", "-s", str(size), str(card)], check=True)
    u_boot = boot_file(image, "u-boot.bin", tmp_path)
    dtb = boot_file(image, "bcm2837-rpi-3-b.dtb", tmp_path)
    console = tmp_path / "pi-console.log"
    # The mini UART (Linux ttyS1, the device tree's stdout-path) is qemu's second serial port.
    cmd = ["qemu-system-aarch64", "-M", "raspi3b", "-kernel", str(u_boot), "-dtb", str(dtb),
           "-drive", f"file={card},if=sd,format=raw", "-display", "none", "-monitor", "none",
           "-serial", "null", "-serial", f"file:{console}"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = started + 900
        text = ""
        while time.monotonic() < deadline and proc.poll() is None:
            text = console.read_text(errors="replace") if console.exists() else ""
            if "login:" in text:
                break
            time.sleep(2)
        seconds = time.monotonic() - started
    finally:
        proc.kill()
        proc.wait()
        shutil.copy(console, image_dir / "raspi3b-console.log")
    assert "login:" in text, text[-3000:]
    timings["raspi3b: power-on to login prompt"] = seconds
    log(f"raspi3b: login prompt after {seconds:.0f} s (U-Boot, GRUB, slot A, mini UART)")
    for expected in ["U-Boot", "Perch: root slot A", "Raspberry Pi 3 Model B"]:
        assert expected in text, f"{expected!r} not on the Pi's console"
