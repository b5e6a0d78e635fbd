"""Is a vendor SDK installed here? The failure-path tests only mean something where it is not."""

from __future__ import annotations

import importlib.util


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
