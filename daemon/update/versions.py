"""Ordering of release versions: PEP 440 where the strings allow it (1.2.0, 2026.11.1, 1.3.0rc1), else a natural
order of their numeric and text parts, so a feed may use any sensible scheme."""

from __future__ import annotations

import re
from typing import Any

from packaging.version import InvalidVersion, Version

_PARTS = re.compile(r"\d+|[A-Za-z]+")


def _natural(version: str) -> tuple[tuple[int, int, str], ...]:
    # Numbers compare as numbers and after words at the same place ("1.2.rc" < "1.2.0").
    return tuple((1, int(p), "") if p.isdigit() else (0, 0, p.lower()) for p in _PARTS.findall(version))


def version_key(version: str) -> tuple[Any, ...]:
    """Sort key; PEP 440 versions sort after free-form ones (a feed should not mix the two)."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, _natural(version))


def newer(candidate: str, installed: str | None) -> bool:
    """True when `candidate` is a later version than `installed` (anything is newer than an unknown version)."""
    if installed is None:
        return True
    a, b = version_key(candidate), version_key(installed)
    if a[0] != b[0]:
        return _natural(candidate) > _natural(installed)
    return a > b
