"""Bundles by URL: downloaded to the data partition (state_dir), never to the root file system RAUC replaces.

Only http(s) is fetched. The file is written beside its final name and renamed when complete, with its sha256
checked when the release feed gave one, so RAUC never sees half a bundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from .errors import UpdateError

DOWNLOAD_DIR = "downloads"
# Room left on the data partition after the download (faces, settings and logs keep living there).
RESERVE_BYTES = 64 * 1024 * 1024
CHUNK = 1 << 16

DownloadProgress = Callable[[int, int | None], None]


def is_url(source: str) -> bool:
    return "://" in source


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UpdateError("bad-url", f"only http:// and https:// addresses can be downloaded, not {parts.scheme}://"
                                     " (give a bundle on this box as a path)")
    if not parts.hostname:
        raise UpdateError("bad-url", f"{url!r} has no host name")


def _no_space(need: int | None, free: int, where: Path) -> UpdateError:
    need_text = f"{need / 1e6:.0f} MB plus {RESERVE_BYTES / 1e6:.0f} MB reserve" if need else "more room"
    return UpdateError("no-space", f"not enough space for the update: it needs {need_text}, {where} has"
                                   f" {free / 1e6:.0f} MB free")


async def download(url: str, state_dir: Path, progress: DownloadProgress | None = None,
                   sha256: str | None = None, timeout_s: float = 30.0) -> Path:
    """Download `url` into state_dir/downloads; the caller removes the file after installing it."""
    check_url(url)
    folder = state_dir / DOWNLOAD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = Path(urlsplit(url).path).name or "update.raucb"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    digest = hashlib.sha256()
    timeout = aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_read=timeout_s)
    try:
        with os.fdopen(fd, "wb") as fh:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
                if resp.status != 200:
                    raise UpdateError("download", f"cannot download {url}: HTTP {resp.status} {resp.reason or ''}"
                                      .rstrip())
                total = resp.content_length
                free = shutil.disk_usage(folder).free
                if total is not None and total + RESERVE_BYTES > free:
                    raise _no_space(total, free, folder)
                done = 0
                async for block in resp.content.iter_chunked(CHUNK):
                    fh.write(block)
                    digest.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
                if total is not None and done != total:
                    raise UpdateError("download", f"cannot download {url}: the connection ended after {done} of"
                                                  f" {total} bytes")
            fh.flush()
            os.fsync(fh.fileno())
        if sha256 and digest.hexdigest() != sha256.lower():
            raise UpdateError("download", f"{url}: sha256 {digest.hexdigest()} does not match the release feed's"
                                          f" {sha256}; file discarded")
        # RAUC refuses bundles that others could write: at most 0755.
        os.chmod(tmp, 0o644)
        dest = folder / name
        os.replace(tmp, dest)
        return dest
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _no_space(None, shutil.disk_usage(folder).free, folder) from exc
        raise UpdateError("download", f"cannot download {url}: {exc.strerror or exc}") from exc
    except aiohttp.ClientError as exc:
        raise UpdateError("download", f"cannot download {url}: {exc or type(exc).__name__}") from exc
    except asyncio.TimeoutError as exc:  # TimeoutError itself on 3.11+
        raise UpdateError("download", f"cannot download {url}: no data for {timeout_s:g} s") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
