"""Fetch an image named by URL (RAYPACK `url=`, Ultralytics `url`, Roboflow `?image=`) without becoming an SSRF proxy.

Off unless `fetch.enabled`. Only http(s); every address a host name resolves to must be public (loopback, private,
link-local, multicast, reserved and unspecified targets are refused) unless the host or a network is listed in
`fetch.allow`. The vetted addresses are the ones connected to (the check lives in the resolver), so a DNS answer
cannot change between check and connect; redirects are followed by hand so every hop is checked again.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from .config import FetchSettings
from .version import VERSION

MAX_REDIRECTS = 3

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchError(Exception):
    """The URL cannot or may not be fetched; the message is for the API client. `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Policy:
    """Which targets may be fetched: public addresses, plus what `fetch.allow` lists (host names or networks)."""

    def __init__(self, allow: list[str]) -> None:
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                self.hosts.add(entry.strip().lower().rstrip("."))

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def address_refusal(self, ip: IPAddress) -> str | None:
        """Why this address may not be fetched from, or None when it may."""
        if any(ip in net for net in self.networks):
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for attribute, what in (("is_loopback", "loopback"), ("is_link_local", "link-local"),
                                ("is_multicast", "multicast"), ("is_unspecified", "unspecified"),
                                ("is_private", "private"), ("is_reserved", "reserved")):
            if getattr(ip, attribute):
                return what
        return None if ip.is_global else "non-public"


class VettingResolver(AbstractResolver):
    """Resolves with the default resolver, then refuses the host if any of its addresses is not allowed."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        if not self.policy.host_allowed(host):
            for result in results:
                why = self.policy.address_refusal(ipaddress.ip_address(result["host"]))
                if why:
                    raise FetchError(f"refusing to fetch from {host}: it resolves to a {why} address"
                                     " (list it in fetch.allow to permit it)", 403)
        return results

    async def close(self) -> None:
        await self.inner.close()


def check_url(url: str, policy: Policy) -> str:
    """Scheme and IP-literal checks (aiohttp connects to IP literals without asking the resolver)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise FetchError(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise FetchError("only http and https URLs can be fetched")
    if not host:
        raise FetchError("the URL has no host")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if not policy.host_allowed(host):
        why = policy.address_refusal(ip)
        if why:
            raise FetchError(f"refusing to fetch from {host}: a {why} address (list it in fetch.allow to permit it)",
                             403)
    return host


async def fetch_image(settings: FetchSettings, url: str) -> bytes:
    """The body at `url` (at most `fetch.max_mb`), or FetchError with a reason the client can act on."""
    if not settings.enabled:
        raise FetchError("fetching images by URL is disabled on this server (set fetch.enabled: true)", 403)
    policy = Policy(settings.allow)
    limit = int(settings.max_mb * 1024 * 1024)
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
    connector = aiohttp.TCPConnector(resolver=VettingResolver(policy), use_dns_cache=False)
    headers = {"User-Agent": f"perchd/{VERSION}", "Accept": "image/*"}
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False,
                                         headers=headers, cookie_jar=aiohttp.DummyCookieJar()) as session:
            for _ in range(MAX_REDIRECTS + 1):
                check_url(url, policy)
                async with session.get(url, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        url = str(resp.url.join(URL(resp.headers["Location"])))
                        continue
                    if resp.status != 200:
                        raise FetchError(f"the image URL answered HTTP {resp.status}")
                    return await _read_capped(resp, limit)
            raise FetchError(f"the image URL redirected more than {MAX_REDIRECTS} times")
    except FetchError:
        raise
    except TimeoutError as exc:
        raise FetchError(f"fetching the image URL timed out after {settings.timeout_s:g} s") from exc
    except aiohttp.ClientConnectorError as exc:
        raise FetchError(f"could not connect to {exc.host}: {exc.os_error.strerror or exc.os_error}") from exc
    except (aiohttp.ClientError, ValueError) as exc:
        raise FetchError(f"could not fetch the image URL: {exc}") from exc


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    too_big = FetchError(f"the image at the URL is larger than {limit / (1024 * 1024):g} MiB", 413)
    if resp.content_length is not None and resp.content_length > limit:
        raise too_big
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def describe(settings: FetchSettings) -> dict[str, Any]:
    """For status pages: whether URL fetching is on, and its limits (never the URLs fetched)."""
    return {"enabled": settings.enabled, "maxMb": settings.max_mb, "timeoutS": settings.timeout_s,
            "allow": list(settings.allow)}
