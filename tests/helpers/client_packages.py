"""Third-party client SDKs installed --no-deps into a temporary folder for one test session.

Their own pins (opencv-python, older numpy) would break the project's venv, so they live beside it and are put on
sys.path *after* the project's packages in the subprocess that runs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def install_client(target: Path, what: str, packages: list[str]) -> Path:
    """pip install `packages` into `target`; under CI a failed install fails the test, elsewhere it skips."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                           "--target", str(target), *packages], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"installing {what} failed: {proc.stderr[-2000:]}")
        pytest.skip(f"{what} could not be installed (offline?): {proc.stderr.strip()[-300:]}")
    return target
