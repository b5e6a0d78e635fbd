"""The daemon's stop sequence (SIGTERM from systemd, an upgrade, a restart by the watchdog).

1. every listener stops accepting at once (new connections are refused, so a load balancer retries elsewhere);
2. the requests in progress are answered, uploads still arriving included, each with `Connection: close`; then
   the idle keep-alive connections are closed. All within a bound that keeps the whole stop inside systemd's
   TimeoutStopSec (a request waits in the queue at most `queue.timeout_s`);
3. only then the apps' cleanup runs: cameras end their tracks, MQTT says `offline` for each camera and the box,
   the model workers stop and the state database closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiohttp import web

from .api.admission import gauge_of
from .api.common import CORE

log = logging.getLogger("perch.app")

# perchd.service has TimeoutStopSec=30: the drain gets at most this, the cleanup after it a few seconds.
MAX_DRAIN_S = 15.0


def drain_timeout(queue_timeout_s: float) -> float:
    """Long enough for a request that waits the whole queue timeout and then runs, never past MAX_DRAIN_S."""
    return min(queue_timeout_s + 2.0, MAX_DRAIN_S)


async def stop_runners(runners: Sequence[web.AppRunner], timeout: float) -> None:
    started = time.monotonic()
    deadline = started + timeout
    for runner in runners:
        for site in list(runner.sites):
            await site.stop()
    gauges = {id(g): g for g in (gauge_of(r.app[CORE]) for r in runners if CORE in r.app)}.values()
    for g in gauges:
        g.draining = True
    # One turn of the loop: requests whose bytes arrived before the listeners closed start being handled.
    await asyncio.sleep(0)
    active = sum(g.active for g in gauges)
    if active:
        log.info("stopping: listeners closed; answering %d upload(s) in progress", active)
    # aiohttp's own shutdown stops reading from every connection at once, which would cut off an upload that is
    # still arriving: wait for the requests with a body first (they are answered with Connection: close).
    while any(g.active for g in gauges) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    # Then aiohttp's own order: idle keep-alive connections closed, the apps' on_shutdown (live streams end), the
    # remaining handlers awaited (each runner's shutdown_timeout, see drain_timeout), the apps cleaned up.
    for runner in reversed(runners):
        await runner.cleanup()
    log.info("stopped serving in %.1f s", time.monotonic() - started)
