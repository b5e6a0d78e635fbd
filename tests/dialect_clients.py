"""Run the seed documents' client examples for real: curl as a subprocess, `requests` on a thread."""

from __future__ import annotations

import asyncio
import json
from typing import Any


async def curl(*args: str, stdin: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one curl call; the arguments are the seed's, with local files and URLs."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-i", *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin)
    assert proc.returncode == 0, f"curl failed ({proc.returncode}): {err.decode()}"
    head, _, body = out.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):  # "100 Continue" before the real answer
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


async def curl_json(*args: str, stdin: bytes | None = None) -> tuple[int, Any]:
    status, _, body = await curl(*args, stdin=stdin)
    return status, json.loads(body)


async def requests_call(method: str, url: str, **kwargs: Any) -> Any:
    """A `requests` call as the seeds write it, on a thread so the test's event loop keeps serving."""
    import requests

    return await asyncio.to_thread(requests.request, method, url, timeout=60, **kwargs)
