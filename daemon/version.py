"""The installed version, read once from package metadata."""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("perchd")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0"


def version_info() -> dict[str, object]:
    """CodeProject.AI's version object shape, filled from our own version."""
    main, _, pre = VERSION.partition("-")
    parts = [int(p) if p.isdigit() else 0 for p in main.split(".")[:3]] + [0, 0, 0]
    return {
        "major": parts[0],
        "minor": parts[1],
        "patch": parts[2],
        "preRelease": pre or None,
        "securityUpdate": False,
        "build": 0,
        "file": f"perchd-{VERSION}",
        "releaseNotes": "",
    }
