"""The multipart fast path (daemon/api/multipart.py) must read every body exactly as aiohttp's reader does, and hand
anything outside its narrow shape to that reader."""

from __future__ import annotations

import asyncio

import pytest
import requests
from multidict import CIMultiDict, CIMultiDictProxy

from perch.daemon.api import multipart

PHOTO = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n\r\n"  # binary, CRLFs and dashes inside the data


def _general(body: bytes, ctype: str) -> list[multipart.Part]:
    headers = CIMultiDictProxy(CIMultiDict({"Content-Type": ctype}))

    async def read() -> list[multipart.Part]:
        return [p async for p in multipart.general_parts(headers, body)]

    return asyncio.run(read())


def _requests_body(files: dict, data: dict) -> tuple[bytes, str, str]:
    prepared = requests.Request("POST", "http://x/", files=files, data=data).prepare()
    ctype = prepared.headers["Content-Type"]
    return prepared.body, ctype, ctype.split("boundary=")[1]


@pytest.mark.parametrize("files,data", [
    ({"image": ("photo.jpg", PHOTO, "image/jpeg")}, {}),
    ({"image": ("photo.jpg", PHOTO, "image/jpeg")}, {"min_confidence": "0.4", "userid": "Ann"}),
    ({"image1": ("a.jpg", PHOTO), "image2": ("b.jpg", b"")}, {"x": ""}),
    ({"image": ("ü name.jpg", PHOTO)}, {}),  # requests writes a non-ASCII name as RFC 2231: the general parser's job
])
def test_fast_path_reads_what_aiohttp_reads(files: dict, data: dict) -> None:
    body, ctype, boundary = _requests_body(files, data)
    fast = multipart.simple_parts(body, boundary)
    assert fast is not None
    assert fast == _general(body, ctype)


@pytest.mark.parametrize("body", [
    b"preamble\r\n--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--B--\r\n",  # a preamble
    b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--B",  # no closing delimiter
    b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n 1\r\n--B--\r\n",  # a folded header line
    b"--B\r\n: no name\r\n\r\n1\r\n--B--\r\n",  # a header without a name
    b"--B\r\nContent-Disposition form-data\r\n\r\n1\r\n--B--\r\n",  # a header without a colon
    b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n",  # headers never end
])
def test_other_shapes_go_to_aiohttp(body: bytes) -> None:
    assert multipart.simple_parts(body, "B") is None


def test_part_without_headers_is_left_to_aiohttp() -> None:
    # aiohttp refuses it (InvalidHeader → the dialect's 400); the fast path must not quietly accept it instead.
    assert multipart.simple_parts(b"--B\r\n\r\nvalue\r\n--B--\r\n", "B") is None


def test_escaped_names_use_the_full_parser() -> None:
    body = b'--B\r\nContent-Disposition: form-data; name="a\\"b"; filename="x.jpg"\r\n\r\nD\r\n--B--\r\n'
    fast = multipart.simple_parts(body, "B")
    assert fast == _general(body, "multipart/form-data; boundary=B")
