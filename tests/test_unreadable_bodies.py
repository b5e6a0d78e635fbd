"""Bodies that cannot be read as sent (found by fuzzing the OpenAPI description): each gets a 400 in its dialect's
shape, never a 500."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from perch.daemon.api.common import CODEPROJECT, DEEPSTACK

from conftest import module_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

cp = module_client(CODEPROJECT)
ds = module_client(DEEPSTACK)

# aiohttp drops the connection once it fails to drain such a body: a fresh connection per request.
NOT_GZIP = {"Content-Encoding": "gzip", "Connection": "close"}
FORM = "application/x-www-form-urlencoded"
BOUNDARY = "b0undary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def part_with_header_name(name: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"".encode() + name + b'"\r\n\r\nx\r\n'
            + f"--{BOUNDARY}--\r\n".encode())


async def test_codeproject_routes_on_both_listeners(cp: TestClient, ds: TestClient) -> None:
    cases = [
        ("/v1/text/sentiment", b"text=not gzip", {**NOT_GZIP, "Content-Type": FORM}),
        ("/v1/vision/detection", b"not gzip", {**NOT_GZIP, "Content-Type": MULTIPART}),
        ("/v1/text/sentiment", b"text=%ff\xff\xfe", {"Content-Type": FORM}),
        ("/v1/text/sentiment", b"text=hello", {"Content-Type": f"{FORM}; charset=no-such-charset"}),
        ("/v1/settings/ObjectDetectionPerch", b"name=\xff", {"Content-Type": FORM}),
        # A control character in a part's header: aiohttp's header parser refuses it.
        ("/v1/vision/detection", part_with_header_name(b"bad\x1fname"), {"Content-Type": MULTIPART}),
    ]
    for path, body, headers in cases:
        resp = await cp.post(path, data=body, headers=headers)
        answer = await resp.json()
        assert resp.status == 200 and answer["success"] is False and answer["code"] == 400, (path, answer)
        resp = await ds.post(path, data=body, headers=headers)
        assert resp.status == 400 and (await resp.json())["success"] is False, path


async def test_cloud_dialects_answer_in_their_shapes(cp: TestClient) -> None:
    resp = await cp.post("/default/1", data=b"not gzip", headers=NOT_GZIP)
    assert resp.status == 400 and "cannot be read" in (await resp.json())["message"]
    resp = await cp.post("/v1/predict/default", data=b"not gzip", headers={**NOT_GZIP, "Content-Type": MULTIPART})
    answer = await resp.json()
    assert resp.status == 400 and answer["success"] is False and "cannot be read" in answer["message"]
    resp = await cp.post("/recog", data=b"model=\xff", headers={"Content-Type": FORM})
    answer = await resp.json()
    assert resp.status == 400 and answer["code"] == 400 and answer["name"] == "Raypack_AI_Filecontainer"
    resp = await cp.post("/v1/user/token", data=b"not gzip", headers=NOT_GZIP)
    answer = await resp.json()
    assert resp.status == 400 and answer["code"] == 400 and "cannot be read" in answer["error"]
