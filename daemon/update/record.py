"""`state_dir/update.json`: what the last update was meant to do, so the next start can tell whether it worked.

Written before RAUC touches anything (state `installing`), then `pending-reboot` or `failed`. On the next daemon start
after a reboot the booted slot decides: the target slot means `updated`; the slot it came from means the new version
did not start and the boot loader went back (`rolled-back`). A restart without a reboot changes nothing: the kernel's
boot id tells the two apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import UpdateError, busy

RECORD_FILE = "update.json"
LOCK_FILE = "update.lock"
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")

INSTALLING = "installing"
PENDING = "pending-reboot"
FAILED = "failed"
UPDATED = "updated"
ROLLED_BACK = "rolled-back"
# What people read for each state (status route, CLI, Home Assistant).
RESULTS = {INSTALLING: "installing", PENDING: "pending reboot", FAILED: "failed", UPDATED: "success",
           ROLLED_BACK: "rolled back"}


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def boot_id(path: Path | None = None) -> str | None:
    """The kernel's id of this boot: it changes with every reboot, not with a daemon restart."""
    try:
        return (path or BOOT_ID_FILE).read_text().strip() or None
    except OSError:
        return None


@dataclass
class UpdateRecord:
    state: str
    target_slot: str | None
    target_bootname: str | None
    target_version: str | None
    from_slot: str | None
    from_bootname: str | None
    from_version: str | None
    source: str
    started: str
    boot_id: str | None = None
    finished: str | None = None
    checked: str | None = None  # when a start after the reboot decided updated / rolled-back
    error: str | None = None
    error_code: str | None = None

    @property
    def result(self) -> str:
        return RESULTS.get(self.state, self.state)

    def summary(self) -> str:
        target = self.target_version or "the new version"
        if self.state == INSTALLING:
            return f"installing {target} into {self.target_slot}"
        if self.state == PENDING:
            return f"{target} installed into {self.target_slot}; it starts after a reboot"
        if self.state == UPDATED:
            return f"updated to {target}"
        if self.state == ROLLED_BACK:
            return f"rolled back: {target} did not start, running {self.from_version or self.from_slot}"
        return f"update to {target} failed: {self.error or 'no reason recorded'}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "result": self.result, "summary": self.summary()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UpdateRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class RecordError(Exception):
    """update.json exists but cannot be read back (hand-edited, disk trouble)."""


def load(state_dir: Path) -> UpdateRecord | None:
    path = state_dir / RECORD_FILE
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return UpdateRecord.from_dict(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise RecordError(f"{path} is unreadable: {exc}") from exc


def save(state_dir: Path, record: UpdateRecord) -> None:
    """Atomic replace (a power cut leaves the old or the new record), owned like the state directory so that the
    daemon's user can update a record that `sudo perchd update install` wrote."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".update.", dir=state_dir)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(record), fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        if os.geteuid() == 0:
            st = state_dir.stat()
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, state_dir / RECORD_FILE)
        # The rename must reach the disk too: the SD image's data partition commits its journal every 60 s, and a
        # power cut soon after an install started brought back the previous record (image-build boot test (c)).
        dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def install_lock(state_dir: Path) -> Iterator[None]:
    """Held while one process installs; a second installer (CLI, Home Assistant) gets UpdateError `busy`."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UpdateError("state", f"cannot use the state directory {state_dir}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise busy() from exc
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def install_running(state_dir: Path) -> bool:
    try:
        with install_lock(state_dir):
            return False
    except UpdateError as exc:
        return exc.code == "busy"


def resolve(record: UpdateRecord, booted_bootname: str | None, current_boot: str | None,
            running_version: str | None, rauc_busy: bool = False, installer_alive: bool = False) -> bool:
    """Decide what became of the last update, at a daemon start; True when the record changed."""
    if record.state == INSTALLING:
        if rauc_busy or installer_alive:
            return False
        # RAUC writes only the slot that is not running, so the running system is as it was.
        record.state, record.finished = FAILED, now()
        record.error = "the installation was interrupted (power cut or crash); the running system is unchanged"
        record.error_code = "interrupted"
        return True
    if record.state != PENDING or booted_bootname is None:
        return False
    if record.boot_id is not None and current_boot == record.boot_id:
        return False  # the daemon restarted, the box did not reboot yet
    record.checked = now()
    if booted_bootname == record.target_bootname:
        record.state = UPDATED
        record.target_version = running_version or record.target_version
        return True
    if booted_bootname == record.from_bootname:
        record.state = ROLLED_BACK
        record.from_version = running_version or record.from_version
        record.error = f"{record.target_version or 'the new version'} did not start; the boot loader went back"
        record.error_code = "rolled-back"
        return True
    return False
