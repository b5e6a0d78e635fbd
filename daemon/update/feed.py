"""The release feed (`update.feed_url`): a small JSON index of image releases, read only when configured.

    {"releases": [{"version": "1.3.0",
                   "url": "https://example.org/perch/perch-1.3.0-arm64.raucb",   # absolute, or relative to the feed
                   "sha256": "<64 hex digits>",                                 # optional, checked after download
                   "notes_url": "https://example.org/perch/1.3.0.html",         # optional
                   "published": "2026-12-01",                                   # optional, ISO date or time
                   "summary": "Faster face recognition",                        # optional, one line
                   "compatible": "perch-arm64"}]}                               # optional; others are skipped

The newest release is the highest version (see versions.py), whatever the order of the list.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urljoin

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import UpdateError
from .versions import version_key

MAX_FEED_BYTES = 1024 * 1024


class Release(BaseModel):
    model_config = ConfigDict(extra="ignore")  # later feed versions may add fields

    version: str = Field(min_length=1, max_length=64)
    url: str = Field(min_length=1)
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    notes_url: str | None = None
    published: str | None = None
    summary: str | None = Field(None, max_length=255)
    compatible: str | None = None

    @field_validator("version")
    @classmethod
    def _plain(cls, v: str) -> str:
        if any(c.isspace() for c in v):
            raise ValueError("a version has no spaces")
        return v


class Feed(BaseModel):
    model_config = ConfigDict(extra="ignore")

    releases: list[Release]


def parse_feed(body: bytes, feed_url: str, compatible: str | None = None) -> Release | None:
    """The newest release for this system in a feed document; UpdateError `feed` when it is not one."""
    try:
        feed = Feed.model_validate(json.loads(body))
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ValidationError):
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            detail = f"{where}: {err['msg']}"
        else:
            detail = "not JSON"
        raise UpdateError("feed", f"the release feed {feed_url} is not a valid release index ({detail})") from exc
    usable = [r for r in feed.releases if compatible is None or r.compatible in (None, compatible)]
    if not usable:
        return None
    best = max(usable, key=lambda r: version_key(r.version))
    return best.model_copy(update={"url": urljoin(feed_url, best.url),
                                   "notes_url": urljoin(feed_url, best.notes_url) if best.notes_url else None})


async def fetch_latest(feed_url: str, compatible: str | None = None, timeout_s: float = 15.0) -> Release | None:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(feed_url) as resp:
            if resp.status != 200:
                raise UpdateError("feed", f"the release feed {feed_url} answered HTTP {resp.status}")
            body = await resp.content.read(MAX_FEED_BYTES + 1)
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        raise UpdateError("feed", f"cannot read the release feed {feed_url}: {exc or type(exc).__name__}") from exc
    if len(body) > MAX_FEED_BYTES:
        raise UpdateError("feed", f"the release feed {feed_url} is larger than {MAX_FEED_BYTES // 1024} KiB")
    return parse_feed(body, feed_url, compatible)
