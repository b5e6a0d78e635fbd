"""What `perchd update status`, `GET /v1/status/update` and Home Assistant show, and the check after a reboot."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from . import record as rec
from .errors import UpdateError
from .rauc import RaucClient, RaucStatus
from .release import image_version

log = logging.getLogger("perch.update")

CMDLINE = Path("/proc/cmdline")
_SLOT_ARG = re.compile(r"(?:^|\s)rauc\.slot=(\S+)")


def cmdline_bootname(path: Path | None = None) -> str | None:
    """The slot the boot loader says it started (`rauc.slot=A` on the kernel command line), when RAUC is silent."""
    try:
        match = _SLOT_ARG.search((path or CMDLINE).read_text())
    except OSError:
        return None
    return match.group(1) if match else None


async def rauc_status() -> tuple[RaucStatus | None, UpdateError | None]:
    try:
        async with RaucClient.connect() as rauc:
            return await rauc.status(), None
    except UpdateError as exc:
        return None, exc


def _load_record(state_dir: Path) -> tuple[rec.UpdateRecord | None, str | None]:
    try:
        return rec.load(state_dir), None
    except rec.RecordError as exc:
        return None, str(exc)


async def gather(state_dir: Path, release_file: Path, cmdline: Path | None = None) -> dict[str, Any]:
    """Everything known about updates on this box; never raises for a missing RAUC or a bad record."""
    status, error = await rauc_status()
    record, record_error = _load_record(state_dir)
    out: dict[str, Any] = {
        "image_version": image_version(release_file),
        "rauc": {"available": status is not None, "error": error.message if error else None,
                 "code": error.code if error else None},
        "booted_slot": None,
        "primary_slot": None,
        "slots": [],
        "last_update": record.to_dict() if record else None,
    }
    if record_error:
        out["record_error"] = record_error
    if status is not None:
        booted = status.booted
        out["rauc"].update(compatible=status.compatible, operation=status.operation,
                           last_error=status.last_error or None)
        out["booted_slot"] = booted.name if booted else status.boot_slot
        out["booted_bootname"] = status.boot_slot
        out["primary_slot"] = status.primary
        out["slots"] = [s.to_dict() for s in status.slots]
    else:
        out["booted_bootname"] = cmdline_bootname(cmdline)
    return out


def _parse_time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def _finished_unseen(record: rec.UpdateRecord, status: RaucStatus) -> bool:
    """An install RAUC completed while no perchd watched (the installer was stopped): RAUC wrote the target slot
    after the record was started and made it the next to boot. Marks the record pending-reboot."""
    if record.state != rec.INSTALLING or status.operation != "idle":
        return False
    target = next((s for s in status.slots if s.name == record.target_slot), None)
    written, started = _parse_time(target.installed if target else None), _parse_time(record.started)
    if written is None or started is None or written < started or status.primary != record.target_slot:
        return False
    record.state, record.finished = rec.PENDING, target.installed if target else None
    record.target_version = (target.version if target else None) or record.target_version
    return True


async def check_after_boot(state_dir: Path, release_file: Path, cmdline: Path | None = None,
                           boot_id_file: Path | None = None) -> rec.UpdateRecord | None:
    """At a daemon start: decide what became of the last update (updated / rolled back / interrupted) and log it.
    Returns the record (changed or not), None when there is none."""
    record, record_error = _load_record(state_dir)
    if record_error:
        log.error("update: %s", record_error)
        return None
    if record is None or record.state not in (rec.INSTALLING, rec.PENDING):
        return record
    status, error = await rauc_status()
    booted = status.boot_slot if status is not None else cmdline_bootname(cmdline)
    changed = status is not None and _finished_unseen(record, status)
    changed = rec.resolve(record, booted, rec.boot_id(boot_id_file), image_version(release_file),
                          rauc_busy=status is not None and status.operation != "idle",
                          installer_alive=rec.install_running(state_dir)) or changed
    if changed:
        rec.save(state_dir, record)
        if record.state == rec.UPDATED:
            log.info("update: %s (slot %s)", record.summary(), record.target_slot)
        else:
            log.warning("update: %s", record.summary())
    elif record.state == rec.PENDING and booted is None and error is not None:
        log.warning("update: cannot tell which slot is running (%s); the last update stays pending", error.message)
    return record
