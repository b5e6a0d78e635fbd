"""`perchd models pull`: download the variants this machine can use, with a progress bar and sha256 check."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .manifest import FileRef, Manifest, ModelFileError, resolve


class PullError(Exception):
    pass


@dataclass(frozen=True)
class PullItem:
    model_id: str
    ref: FileRef


def wanted_files(manifest: Manifest, model_ids: Iterable[str], kinds: Iterable[str],
                 soc: str | None = None) -> list[PullItem]:
    """Label files plus every variant of the given models runnable on the given accelerator kinds (and, when `soc`
    is given, built for that SoC: a Rockchip board needs its own .rknn only)."""
    kinds = list(kinds)
    seen: set[str] = set()
    out: list[PullItem] = []
    for model_id in model_ids:
        entry = manifest.models[model_id]
        refs: list[FileRef] = []
        if entry.labels is not None and entry.labels.file:
            refs.append(FileRef(file=entry.labels.file, sha256=entry.labels.sha256, url=entry.labels.url))
        refs += [v for v in entry.variants if v.accelerator in kinds and (not soc or not v.soc or soc in v.soc)]
        for ref in refs:
            if ref.file not in seen:
                seen.add(ref.file)
                out.append(PullItem(model_id, ref))
    return out


def _progress(out: TextIO, name: str, done: int, total: int | None) -> None:
    if total:
        width = 30
        filled = int(width * done / total)
        out.write(f"\r  {name} [{'#' * filled}{'.' * (width - filled)}] {done / 1e6:.1f}/{total / 1e6:.1f} MB")
    else:
        out.write(f"\r  {name} {done / 1e6:.1f} MB")
    out.flush()


def download(url: str, dest: Path, sha256: str | None, out: TextIO = sys.stderr, timeout: float = 30.0) -> None:
    """Download to a temporary file beside `dest`, check the hash, then rename: never a half-written model."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    done = 0
                    while block := resp.read(1 << 16):
                        fh.write(block)
                        digest.update(block)
                        done += len(block)
                        _progress(out, dest.name, done, total)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise PullError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from exc
        out.write("\n")
        actual = digest.hexdigest()
        if sha256 and actual != sha256:
            raise PullError(f"{url}: sha256 {actual} does not match the manifest's {sha256}; file discarded")
        os.replace(tmp_name, dest)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def pull(manifest: Manifest, model_dir: Path, items: list[PullItem], base_url: str | None = None,
         out: TextIO = sys.stderr) -> list[str]:
    """Fetch what is missing or corrupt; returns the errors (empty = everything is in place)."""
    errors: list[str] = []
    for item in items:
        ref = item.ref
        try:
            resolve(model_dir, ref)
            out.write(f"  {ref.file}: present, sha256 ok\n")
            continue
        except ModelFileError:
            pass
        url = f"{base_url.rstrip('/')}/{ref.file}" if base_url else ref.url
        if not url:
            build = getattr(ref, "build", None) or "see the manifest's `build`"
            errors.append(f"{ref.file}: no download address; build it yourself: {build}")
            continue
        try:
            download(url, model_dir / ref.file, ref.sha256, out)
            out.write(f"  {ref.file}: downloaded, sha256 ok\n")
        except PullError as exc:
            errors.append(str(exc))
    return errors
