"""Shared fixtures: where the real models and photos are, settings pointing at them, a started Core."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from perch.daemon.config import Settings
from perch.daemon.core import Core

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PERCHD_SHARED", REPO.parent / "shared")).resolve()
MODELS = SHARED / "models"
IMAGES = SHARED / "images"

if not MODELS.is_dir():
    raise pytest.UsageError(f"real models not found at {MODELS}: set PERCHD_SHARED to the shared/ folder")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        model_dir=MODELS,
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        legacy_port=0,
        cpu={"workers": 2, "threads": 1},
    )


@pytest.fixture
async def core(settings: Settings) -> AsyncIterator[Core]:
    c = Core(settings)
    await c.start()
    yield c
    await c.close()


def image_bytes(name: str) -> bytes:
    return (IMAGES / name).read_bytes()
