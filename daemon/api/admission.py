"""Admission control: under a storm of requests, keep the event loop free for the cheap routes.

Every inference request's upload is parsed on the event loop before its model's queue can say "full". With a
hundred clients that retry at once, parsing uploads only to refuse them fills the loop, and the health check
(`/v1/status/ping`, which load balancers and systemd's watchdog rely on) waits behind them. Two measures:

- at most `limit` uploads are in progress at once (read, queued or running; both listeners together). Beyond
  that a request is refused before its body is read, with the same "busy" answer as a full queue (503 with
  Retry-After, in the route's dialect). The limit is twice the queue depth plus the workers: more than the queue
  can hold, so it never refuses a request that the queue would have taken;
- while refusals come faster than `limit` per second, each busy answer is held back for about half a second
  (jittered, less than its Retry-After) before it is sent: a client that retries at once then retries at the
  pace the box can afford. A lone refusal on a box that is merely busy still comes at once.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import weakref

from aiohttp import web

from ..core import Core
from ..scheduler import QueueFull
from .auth import UNBILLED_PREFIXES, dialect_of, refuse
from .common import CORE, Handler

HOLD_S = 0.5


class Admission:
    def __init__(self, max_depth: int, workers: int | None) -> None:
        self.limit = 2 * max_depth + (workers or os.cpu_count() or 1)
        self.in_progress = 0  # uploads (work requests) being read, queued or run
        # Requests with a body being handled, for the stop sequence (daemon/graceful.py): aiohttp's own shutdown
        # stops reading bodies, so these are waited for first. Bodiless ones (live streams too) are left to it.
        self.active = 0
        self.draining = False  # stopping: answers close their connection
        self.refused = 0
        self._second = 0
        self._in_second = 0

    def storming(self) -> bool:
        """Count one refusal; True while refusals in the current second exceed the limit."""
        self.refused += 1
        now = int(time.monotonic())
        if now != self._second:
            self._second, self._in_second = now, 0
        self._in_second += 1
        return self._in_second > self.limit

    async def hold(self) -> None:
        if self.storming():
            await asyncio.sleep(HOLD_S * random.uniform(0.5, 1.5))


# One gauge per Core: the CodeProject and DeepStack listeners share the models, so they share the limit.
_GAUGES: weakref.WeakKeyDictionary[Core, Admission] = weakref.WeakKeyDictionary()


def gauge(request: web.Request) -> Admission:
    return gauge_of(request.app[CORE])


def gauge_of(core: Core) -> Admission:
    found = _GAUGES.get(core)
    if found is None:
        found = _GAUGES[core] = Admission(core.settings.queue.max_depth, core.settings.cpu.workers)
    return found


def _is_work(request: web.Request) -> bool:
    return request.method == "POST" and request.can_read_body and not request.path.startswith(UNBILLED_PREFIXES)


def _busy(response: web.StreamResponse) -> bool:
    # CodeProject semantics answer "busy" as HTTP 200 with code 503; every busy answer carries Retry-After.
    return response.status == 503 or "Retry-After" in response.headers


@web.middleware
async def admission_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    g = gauge(request)
    body = request.can_read_body
    g.active += body
    try:
        response = await _admit(request, handler, g)
    finally:
        g.active -= body
    if g.draining:
        # The listeners are closed: this connection carries no further request (the client reconnects elsewhere).
        response.force_close()
    return response


async def _admit(request: web.Request, handler: Handler, g: Admission) -> web.StreamResponse:
    if not _is_work(request) or request.match_info.http_exception is not None:
        return await handler(request)
    if g.in_progress >= g.limit:
        await g.hold()
        return refuse(request, dialect_of(request), f"server busy: {g.in_progress} requests in progress", 503)
    g.in_progress += 1
    try:
        try:
            response = await handler(request)
        except QueueFull:
            await g.hold()
            raise
        if _busy(response):
            await g.hold()
        return response
    finally:
        # Released only after the hold: otherwise its slot would go at once to the next upload, which would be
        # parsed only to find the queue still full.
        g.in_progress -= 1
