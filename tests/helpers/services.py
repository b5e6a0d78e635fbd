"""System services the suite starts for real (mosquitto, the GStreamer RTSP server, systemd-analyze).

`needs_service(reason)` marks a test; `reason` None means the service is there. Outside CI a missing service skips
the test (a developer may not have installed it); under CI=true it fails, because CI installs every one of them
(./install-deps.sh --tests) and a skip there would hide a broken set-up — as the client-package installs do.
"""

from __future__ import annotations

import os

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def needs_service(*reasons: str | None) -> pytest.MarkDecorator:
    """A mark for tests that need these services; each reason is None when its service is available."""
    return pytest.mark.needs_service(*reasons)


def missing_service(reason: str) -> None:
    """Inside a test: the service it needs is not there (fail under CI, skip elsewhere)."""
    if under_ci():
        pytest.fail(f"{reason} (CI=true: every system service must be installed)", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Imported into tests/conftest.py: applies the needs_service marks before each test."""
    for mark in item.iter_markers("needs_service"):
        for reason in mark.args:
            if reason:
                missing_service(str(reason))
