#!/usr/bin/python3
"""Confirms the running root slot once perchd is READY and answers (perch-slot-check.service, every boot).

Confirmed: `rauc status mark-good` (RAUC's GRUB variables: <slot>_OK=1, <slot>_TRY=0) and <slot>_TRIAL=0. When the
box came back to this slot because the other one failed its trial (a new version whose perchd never got ready),
that slot is marked bad, so RAUC reports it and GRUB does not try it again.

Not ready (perchd failed for good, or not ready within the time limit): a slot on trial reboots, which GRUB counts
as one of its two tries; a slot confirmed before stays, so a broken configuration does not flip the box between
versions; the unit then fails, visibly.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

GRUBENV = "/boot/firmware/EFI/perch/grubenv"
# perchd's own TimeoutStartSec= is 10 minutes; a first start on a small board may need most of it.
LIMIT_S = 15 * 60
SLOTS = ("A", "B")


def log(message: str) -> None:
    print(f"perch-slot-check: {message}", flush=True)


def booted_slot() -> str | None:
    found = re.search(r"(?:^|\s)rauc\.slot=(\S+)", Path("/proc/cmdline").read_text())
    return found.group(1) if found else None


def grubenv() -> dict[str, str]:
    out = subprocess.run(["grub-editenv", GRUBENV, "list"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def perchd() -> tuple[str, int]:
    out = subprocess.run(
        ["systemctl", "show", "-p", "ActiveState", "-p", "MainPID", "perchd.service"],
        capture_output=True, text=True, check=True,
    ).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return props.get("ActiveState", ""), int(props.get("MainPID") or 0)


def ports(pid: int) -> list[int]:
    """TCP ports the daemon's process listens on: whatever its configuration says, no need to read it."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=False).stdout
    found = []
    for line in out.splitlines():
        if f"pid={pid}," in line:
            local = line.split()[3]
            found.append(int(local.rsplit(":", 1)[1]))
    return sorted(set(found))


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status/ping", timeout=10) as reply:
            return reply.status == 200
    except OSError:
        return False


def ready(deadline: float) -> bool:
    while time.monotonic() < deadline:
        state, pid = perchd()
        if state == "active" and pid and any(answers(port) for port in ports(pid)):
            return True
        if state == "failed":
            # Restart= gave up (StartLimitBurst): it will not get better on this boot.
            return False
        time.sleep(2)
    return False


def confirm(slot: str, env: dict[str, str]) -> None:
    subprocess.run(["rauc", "status", "mark-good", "booted"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["grub-editenv", GRUBENV, "set", f"{slot}_TRIAL=0"], check=True)
    other = next(s for s in SLOTS if s != slot)
    if env.get(f"{other}_TRIAL") == "1":
        if env.get(f"{other}_OK") == "1":
            # RAUC activated it, GRUB tried it and came back here: the new version never got ready.
            log(f"slot {other} failed its trial (perchd never became ready there): marked bad, staying on {slot}")
            subprocess.run(["rauc", "status", "mark-bad", "other"], check=True, stdout=subprocess.DEVNULL)
        else:
            log(f"the installation into slot {other} did not finish (RAUC left it marked bad)")
        subprocess.run(["grub-editenv", GRUBENV, "set", f"{other}_TRIAL=0"], check=True)
    log(f"slot {slot} is good: perchd is ready and answers")


def main() -> int:
    slot = booted_slot()
    if slot not in SLOTS:
        log("not started by Perch's GRUB (no rauc.slot= on the kernel command line): nothing to confirm")
        return 0
    env = grubenv()
    trial = env.get(f"{slot}_TRIAL") == "1"
    if ready(time.monotonic() + LIMIT_S):
        confirm(slot, env)
        return 0
    if trial:
        log(f"slot {slot} is on trial and perchd did not become ready: rebooting (GRUB counts the try)")
        subprocess.run(["systemctl", "reboot", "--no-block"], check=False)
    else:
        log(f"perchd is not ready; slot {slot} was confirmed before and stays (see `journalctl -u perchd`)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
