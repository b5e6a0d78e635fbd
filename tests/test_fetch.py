"""Fetching `url=` / `?image=`: off by default; when on, only http(s), a size cap, a timeout, and no loopback /
private / link-local targets unless allow-listed (checked on every address and after every redirect)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from perch.daemon.config import FetchSettings
from perch.daemon.fetch import FetchError, Policy, fetch_image

from conftest import image_bytes

ServerFactory = Callable[..., Awaitable[TestServer]]
PHOTO = image_bytes("pets.jpg")


@pytest.fixture
async def host(aiohttp_server: ServerFactory) -> TestServer:
    async def photo(request: web.Request) -> web.Response:
        return web.Response(body=PHOTO, content_type="image/jpeg")

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # chunked: no Content-Length to refuse up front
        await resp.prepare(request)
        for i in range(0, len(PHOTO), 4096):
            await resp.write(PHOTO[i:i + 4096])
        await resp.write_eof()
        return resp

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(body=PHOTO)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/pets.jpg", photo)
    app.router.add_get("/streamed.jpg", streamed)
    app.router.add_get("/slow.jpg", slow)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop", loop)
    app.router.add_get("/missing.jpg", missing)
    return await aiohttp_server(app)


def _settings(**kw: object) -> FetchSettings:
    return FetchSettings(**{"enabled": True, **kw})


async def test_disabled_by_default(host: TestServer) -> None:
    with pytest.raises(FetchError, match="disabled") as err:
        await fetch_image(FetchSettings(), str(host.make_url("/pets.jpg")))
    assert err.value.status == 403


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x.jpg", "http://[::1]/x.jpg", "http://0.0.0.0/x.jpg", "http://10.1.2.3/x.jpg",
    "http://192.168.1.10/x.jpg", "http://172.16.0.1/x.jpg", "http://169.254.169.254/latest/meta-data",
    "http://[::ffff:127.0.0.1]/x.jpg", "http://[fe80::1]/x.jpg", "http://localhost/x.jpg",
])
async def test_internal_targets_refused(url: str) -> None:
    with pytest.raises(FetchError, match="refusing") as err:
        await fetch_image(_settings(), url)
    assert err.value.status == 403


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "file:///etc/passwd", "gopher://x/", "http:///nohost"])
async def test_only_http_and_https(url: str) -> None:
    with pytest.raises(FetchError):
        await fetch_image(_settings(), url)


def test_policy_addresses() -> None:
    policy = Policy(["192.168.7.0/24", "camera.lan"])
    assert policy.address_refusal(ipaddress.ip_address("8.8.8.8")) is None
    assert policy.address_refusal(ipaddress.ip_address("2606:4700:4700::1111")) is None
    assert policy.address_refusal(ipaddress.ip_address("192.168.7.20")) is None
    assert policy.address_refusal(ipaddress.ip_address("192.168.8.20")) == "private"
    assert policy.address_refusal(ipaddress.ip_address("100.64.0.1")) is not None  # carrier-grade NAT
    assert policy.address_refusal(ipaddress.ip_address("224.0.0.251")) == "multicast"
    assert policy.host_allowed("Camera.LAN.") and not policy.host_allowed("other.lan")


async def test_allow_list_by_address_network_and_name(host: TestServer) -> None:
    for allow in (["127.0.0.1"], ["127.0.0.0/8"]):
        assert await fetch_image(_settings(allow=allow), str(host.make_url("/pets.jpg"))) == PHOTO
    url = f"http://localhost:{host.port}/pets.jpg"
    assert await fetch_image(_settings(allow=["localhost"]), url) == PHOTO
    assert await fetch_image(_settings(allow=["127.0.0.1"]), str(host.make_url("/streamed.jpg"))) == PHOTO


async def test_redirect_is_checked_again(host: TestServer) -> None:
    # Allowed by name; the redirect points at the same server by loopback address, which is not allowed.
    target = str(host.make_url("/pets.jpg"))
    url = f"http://localhost:{host.port}/redirect?to={target}"
    with pytest.raises(FetchError, match="refusing"):
        await fetch_image(_settings(allow=["localhost"]), url)
    assert await fetch_image(_settings(allow=["localhost", "127.0.0.1"]), url) == PHOTO
    with pytest.raises(FetchError, match="redirected more than"):
        await fetch_image(_settings(allow=["127.0.0.1"]), str(host.make_url("/loop")))


async def test_size_cap_timeout_and_status(host: TestServer) -> None:
    small = len(PHOTO) / (1024 * 1024) / 2
    for path in ("/pets.jpg", "/streamed.jpg"):
        with pytest.raises(FetchError, match="larger than") as err:
            await fetch_image(_settings(allow=["127.0.0.1"], max_mb=small), str(host.make_url(path)))
        assert err.value.status == 413
    with pytest.raises(FetchError, match="timed out"):
        await fetch_image(_settings(allow=["127.0.0.1"], timeout_s=0.3), str(host.make_url("/slow.jpg")))
    with pytest.raises(FetchError, match="HTTP 404"):
        await fetch_image(_settings(allow=["127.0.0.1"]), str(host.make_url("/missing.jpg")))
    with pytest.raises(FetchError, match="connect"):
        await fetch_image(_settings(allow=["127.0.0.1"]), "http://127.0.0.1:9/x.jpg")
