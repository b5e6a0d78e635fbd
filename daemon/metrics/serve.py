"""`GET /metrics` on the main listener, and the request counter both listeners feed.

One CollectorRegistry per daemon (per Core), never prometheus_client's global one: tests run several daemons in one
process, and the two listeners of one daemon are one scrape target (DeepStack-listener requests count with
dialect="deepstack"). When API keys are on, /metrics wants one like every other route: Prometheus sends it as
`authorization: {credentials: KEY}` (a bearer token) or `params: {api_key: [KEY]}`; a refusal is a real 401.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder

from ..api import auth
from ..api.common import CODEPROJECT, CORE, DEEPSTACK, SEMANTICS, json_response
from ..core import Core
from .collector import PerchCollector, RequestKey

PATH = "/metrics"
NAME = "metrics"
UNMATCHED = "unmatched"  # the one route label of every request that matched no route (404, 405)
# A CodeProject-style refusal is HTTP 200 with the real status as the body's last field.
_CODE = re.compile(rb'"code":(\d{3})}$')


@dataclass
class DaemonMetrics:
    registry: CollectorRegistry
    requests: dict[RequestKey, int] = field(default_factory=dict)


_DAEMONS: weakref.WeakKeyDictionary[Core, DaemonMetrics] = weakref.WeakKeyDictionary()
METRICS: web.AppKey[DaemonMetrics] = web.AppKey("metrics", DaemonMetrics)


def metrics_for(core: Core) -> DaemonMetrics:
    found = _DAEMONS.get(core)
    if found is None:
        registry = CollectorRegistry(auto_describe=True)
        found = DaemonMetrics(registry)
        registry.register(PerchCollector(core, found.requests))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        _DAEMONS[core] = found
    return found


def install(app: web.Application) -> None:
    """Count this listener's answers; serve /metrics when it is the main (CodeProject) listener."""
    app[METRICS] = metrics_for(app[CORE])
    app.on_response_prepare.append(_count)
    auth.register_refusal(NAME, _refusal)
    if app[SEMANTICS] == CODEPROJECT:
        app.router.add_get(PATH, serve)


async def _count(request: web.Request, response: web.StreamResponse) -> None:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else UNMATCHED
    dialect = auth.dialect_of(request)
    if dialect == CODEPROJECT and request.app[SEMANTICS] == DEEPSTACK:
        dialect = DEEPSTACK
    status = response.status
    if status == 200 and isinstance(response, web.Response):
        body = response.body
        if isinstance(body, bytes) and body.startswith(b'{"success":false'):
            found = _CODE.search(body, max(0, len(body) - 16))
            status = int(found.group(1)) if found else status
    key = (dialect, route, str(status))
    counts = request.app[METRICS].requests
    counts[key] = counts.get(key, 0) + 1


def _refusal(request: web.Request, message: str, status: int) -> web.Response:
    # A real status (not CodeProject's HTTP 200): Prometheus marks the target down and shows the reason.
    return json_response({"success": False, "error": message}, status, headers={"WWW-Authenticate": "Bearer"})


@auth.dialect(NAME)
async def serve(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": content_type})
