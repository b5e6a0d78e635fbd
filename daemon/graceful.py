"""The daemon's stop sequence (SIGTERM from systemd, an upgrade, a restart by the watchdog).

1. every listener stops accepting at once (new connections are refused, so a load balancer retries elsewhere);
2. idle keep-alive connections are closed and the requests already read are answered, within a bound that keeps
   the whole stop inside systemd's TimeoutStopSec (a request waits in the queue at most `queue.timeout_s`);
3. only then the apps' cleanup runs: cameras end their tracks, MQTT says `offline` for each camera and the box,
   the model workers stop and the state database closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiohttp import web

log = logging.getLogger("perch.app")

# perchd.service has TimeoutStopSec=30: the drain gets at most this, the cleanup after it a few seconds.
MAX_DRAIN_S = 15.0


def drain_timeout(queue_timeout_s: float) -> float:
    """Long enough for a request that waits the whole queue timeout and then runs, never past MAX_DRAIN_S."""
    return min(queue_timeout_s + 2.0, MAX_DRAIN_S)


async def stop_runners(runners: Sequence[web.AppRunner], timeout: float) -> None:
    started = time.monotonic()
    for runner in runners:
        for site in list(runner.sites):
            await site.stop()
    # One turn of the loop: requests whose bytes arrived before the listeners closed start being handled.
    await asyncio.sleep(0)
    servers = [r.server for r in runners if r.server is not None]
    in_flight = sum(len(s.connections) for s in servers)
    for server in servers:
        server.pre_shutdown()
    if in_flight:
        log.info("stopping: listeners closed; finishing the requests in flight on %d connection(s)", in_flight)
    await asyncio.gather(*(server.shutdown(timeout) for server in servers))
    for runner in reversed(runners):
        await runner.cleanup()
    log.info("stopped in %.1f s", time.monotonic() - started)
