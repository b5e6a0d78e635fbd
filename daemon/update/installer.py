"""One install, whoever asks for it (`perchd update install`, Home Assistant): check, record, download, install.

Order matters: RAUC is asked first (no point downloading half a gigabyte onto a desktop without it), update.json is
written before RAUC writes anything, and it ends as `pending-reboot` or `failed` whatever happens.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import record as rec
from .download import check_url, download, is_url
from .errors import UpdateError, busy
from .rauc import RaucClient, RaucStatus
from .release import image_version

log = logging.getLogger("perch.update")


@dataclass
class Reporter:
    """What an install tells its caller as it goes; every callback is optional and must not block."""

    download: Callable[[int, int | None], None] | None = None  # bytes done, total
    progress: Callable[[int, str], None] | None = None  # RAUC's percent and step
    started: Callable[[rec.UpdateRecord], None] | None = None  # update.json written, RAUC about to start


def _local_bundle(source: str) -> Path:
    path = Path(source).expanduser()
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise UpdateError("missing-file", f"bundle {source} {what}")
    return path.resolve()


async def install(state_dir: Path, release_file: Path, source: str, reporter: Reporter | None = None,
                  sha256: str | None = None) -> rec.UpdateRecord:
    """Install a bundle (path or http(s) URL); returns the pending-reboot record, raises UpdateError."""
    reporter = reporter or Reporter()
    if is_url(source):
        check_url(source)
        bundle = None
    else:
        bundle = _local_bundle(source)
    with rec.install_lock(state_dir):
        async with RaucClient.connect() as rauc:
            status = await rauc.status()
            if status.operation != "idle":
                raise busy("RAUC is already installing an update")
            if bundle is not None:
                return await _install(rauc, status, state_dir, release_file, source, bundle, reporter)
            log.info("update: downloading %s", source)
            downloaded = await download(source, state_dir, reporter.download, sha256)
            try:
                return await _install(rauc, status, state_dir, release_file, source, downloaded, reporter)
            finally:
                with contextlib.suppress(OSError):
                    downloaded.unlink()


async def _install(rauc: RaucClient, status: RaucStatus, state_dir: Path, release_file: Path, source: str,
                   bundle: Path, reporter: Reporter) -> rec.UpdateRecord:
    target, booted = status.install_target(), status.booted
    try:
        _compatible, version = await rauc.info(str(bundle))
    except UpdateError:
        version = None  # RAUC says why when it is asked to install it
    record = rec.UpdateRecord(
        state=rec.INSTALLING, target_slot=target.name if target else None,
        target_bootname=target.bootname if target else None, target_version=version,
        from_slot=booted.name if booted else None, from_bootname=status.boot_slot,
        from_version=image_version(release_file) or (booted.version if booted else None),
        source=source, started=rec.now(), boot_id=rec.boot_id())
    rec.save(state_dir, record)
    if reporter.started is not None:
        reporter.started(record)
    log.info("update: installing %s from %s into %s", version or "a bundle", source, record.target_slot)
    try:
        await rauc.install(str(bundle), reporter.progress)
    except UpdateError as exc:
        record.state, record.finished = rec.FAILED, rec.now()
        record.error, record.error_code = exc.message, exc.code
        rec.save(state_dir, record)
        log.error("update: %s", exc.message)
        raise
    record.state, record.finished = rec.PENDING, rec.now()
    rec.save(state_dir, record)
    log.info("update: %s", record.summary())
    return record
