"""The image's own version: `/usr/lib/perch/release` (written by image-build, os-release syntax, `VERSION=...`)."""

from __future__ import annotations

import shlex
from pathlib import Path

DEFAULT_RELEASE_FILE = Path("/usr/lib/perch/release")


def read_release(path: Path) -> dict[str, str]:
    """KEY=value lines (values may be shell-quoted); {} when the file is missing or unreadable (not an image)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw.strip()]
        out[key.strip()] = " ".join(parts)
    return out


def image_version(path: Path) -> str | None:
    """The installed image version, or None on a system that is not a Perch image (e.g. a pip install)."""
    return read_release(path).get("VERSION") or None
