"""/openapi.json is a valid OpenAPI 3.1 document that describes exactly the routes both listeners serve, and /docs
shows it without asking any other host."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from perch.daemon.api import auth
from perch.daemon.api.common import CODEPROJECT, DEEPSTACK
from perch.daemon.app import create_app
from perch.daemon.core import Core
from perch.daemon.openapi.spec import MAIN_ONLY, build_spec, load_fragments, operations

from conftest import core_settings, module_client, running, tuned

pytestmark = pytest.mark.asyncio(loop_scope="module")

cp = module_client(CODEPROJECT)
ds = module_client(DEEPSTACK)

FRAGMENTS = "daemon/openapi/fragments/"


def routed(app: web.Application) -> dict[tuple[str, str], str]:
    """(METHOD, path template) -> where its handler lives, for every route of a listener. HEAD comes with every
    GET (aiohttp adds it) and is not described separately."""
    out = {}
    for route in app.router.routes():
        resource = route.resource
        if route.method == "HEAD" or resource is None:
            continue
        handler = route.handler
        out[(route.method, resource.canonical)] = f"{handler.__module__}.{handler.__qualname__}"
    return out


def described(spec: dict[str, Any], listener: str) -> set[tuple[str, str]]:
    return {(method, path) for method, path, _ in operations(spec)
            if listener == "main" or listener in spec["paths"][path].get(MAIN_ONLY, [listener])}


def fragment_of(path: str) -> str:
    for module in load_fragments(everything=True):
        if path in module.PATHS:
            return FRAGMENTS + module.__name__.rsplit(".", 1)[1] + ".py"
    return "?"


async def test_served_document_is_valid_openapi_31(cp: TestClient, ds: TestClient) -> None:
    resp = await cp.get("/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    spec = await resp.json()
    assert spec["openapi"].startswith("3.1")
    validate(spec)
    assert await (await ds.get("/openapi.json")).json() == spec


@pytest.mark.parametrize("semantics", [CODEPROJECT, DEEPSTACK])
async def test_every_route_is_described_and_every_description_routed(module_core: Core, semantics: str) -> None:
    listener = "main" if semantics == CODEPROJECT else "deepstack"
    routes = routed(create_app(module_core, semantics))
    spec = build_spec()
    documented = described(spec, listener)
    undocumented = [f"  {method} {path}  (handler {routes[(method, path)]})"
                    for method, path in sorted(set(routes) - documented)]
    assert not undocumented, (
        f"routes served on the {listener} listener but missing from /openapi.json:\n" + "\n".join(undocumented)
        + f"\nDescribe each in PATHS of a fragment under {FRAGMENTS} (a new module there is picked up by itself;"
        " the helpers are in daemon/openapi/parts.py, e.g. parts.codeproject(...) for CodeProject-style routes,"
        " parts.dialect(...) for a dialect with its own error shape). A route only the main listener serves gets"
        f' "{MAIN_ONLY}": ["main"] on its path item.')
    unrouted = [f"  {method} {path}  (described in {fragment_of(path)})"
                for method, path in sorted(documented - set(routes))]
    assert not unrouted, (
        f"/openapi.json describes routes the {listener} listener does not serve:\n" + "\n".join(unrouted)
        + f'\nRemove them from the fragment, register the route, or (main-only routes) add "{MAIN_ONLY}": ["main"].')


async def test_open_routes_are_the_ones_auth_leaves_open() -> None:
    prefixes = tuple(getattr(auth, "OPEN_PREFIXES", ()))
    spec = build_spec()
    for method, path, op in operations(spec):
        is_open = path in auth.OPEN_PATHS or (bool(prefixes) and path.startswith(prefixes))
        assert (op.get("security") == []) == is_open, (
            f"{method} {path} ({fragment_of(path)}): security: [] in the document exactly when auth leaves it open")
    assert set(auth.OPEN_PATHS) <= set(spec["paths"]), "every open path is described"


async def test_fragments_waiting_for_other_packages_are_valid_too() -> None:
    """Fragments whose REQUIRES package is not here yet (routes of another branch) still make a valid document."""
    validate(build_spec(everything=True))


async def test_every_operation_is_complete() -> None:
    spec = build_spec()
    for method, path, op in operations(spec):
        where = f"{method} {path} ({fragment_of(path)})"
        assert op.get("summary") and op.get("tags"), f"{where}: needs a summary and a tag"
        assert "200" in op["responses"] and "404" in op["responses"], f"{where}: needs 200 and 404 responses"
        for name in re.findall(r"{(\w+)}", path):
            params = spec["paths"][path].get("parameters", []) + op.get("parameters", [])
            assert any(p["name"] == name and p["in"] == "path" for p in params), f"{where}: describe {{{name}}}"
    tags = {t["name"] for t in spec["tags"]}
    assert {op["tags"][0] for _, _, op in operations(spec)} <= tags, "every tag needs an entry in TAGS"


async def test_docs_page_is_served_and_asks_no_other_host(cp: TestClient) -> None:
    resp = await cp.get("/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert 'fetch("/openapi.json")' in page
    # No scripts, styles, fonts or images from anywhere but the box itself.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", page)


async def test_spec_and_docs_need_no_key(tmp_path: Any) -> None:
    settings = tuned(core_settings(tmp_path), auth={"api_keys": ["only-key-0123456789"]})
    async with running(settings) as core, TestClient(TestServer(create_app(core))) as client:
        assert (await client.get("/openapi.json")).status == 200
        assert (await client.get("/docs")).status == 200
        assert (await (await client.get("/v1/status/system-status")).json())["code"] == 401
