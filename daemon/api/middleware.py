"""One middleware for all listeners: the one-line request log and the last-resort error net.

Nothing a client sends may take the daemon down: every exception becomes a response in the listener's dialect.
Dialects with their own error shapes (Roboflow, Ultralytics, RAYPACK) answer their errors in their handlers.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ...accelerators.base import AcceleratorError
from ..memory import MemoryBudgetExceeded
from ..registry import ModelUnavailable
from ..scheduler import PoolClosed, QueueFull, QueueTimeout
from ..vision.image import ImageError
from .common import CORE, ApiError, Handler, error_response

# Refusals the daemon means to give (busy, out of time, no model, no room): answered without a traceback in the log.
EXPECTED_REFUSALS = (QueueFull, QueueTimeout, ModelUnavailable, MemoryBudgetExceeded)

log = logging.getLogger("perch.http")

# Successful reads that an open dashboard repeats every few seconds: at info level they would flood the journal
# and push everything else out of the log ring that /v1/log/list serves.
QUIET_PATHS = frozenset({"/v1/status/system-status", "/v1/log/list", "/v1/status/history", "/cameras/events",
                         "/v1/settings/ObjectDetectionPerch", "/v1/vision/custom/list"})
QUIET_PREFIXES = ("/ui/", "/cameras/")


def status_for(exc: BaseException) -> tuple[int, str]:
    """Map an internal failure to (HTTP status, message for the client)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, ImageError):
        return 400, str(exc)
    if isinstance(exc, (HttpProcessingError, web.RequestPayloadError)):
        # The body cannot be read as sent: a Content-Encoding it is not in (gzip that is not gzip), a broken chunk.
        return 400, "the request body cannot be read: " + " ".join(str(exc).split())
    if isinstance(exc, (QueueFull, MemoryBudgetExceeded)):
        return 503, str(exc)
    if isinstance(exc, QueueTimeout):
        return 504, str(exc)
    if isinstance(exc, (ModelUnavailable, PoolClosed)):
        return 500, f"model unavailable: {exc}"
    if isinstance(exc, AcceleratorError):
        return 500, f"inference failed: {exc}"
    return 500, "internal server error"


@web.middleware
async def perch_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if status == 503 and "Retry-After" not in response.headers and not response.prepared:
            # Every dialect's "busy" refusal tells clients and load balancers when to come back.
            response.headers["Retry-After"] = "1"
        return response
    except web.HTTPException as exc:
        status = exc.status
        if exc.status in (404, 405):
            reason = "unknown route" if exc.status == 404 else f"method {request.method} not allowed here"
            return error_response(request, f"{reason}: {request.path}", exc.status)
        if exc.status >= 400:
            return error_response(request, exc.reason or "request refused", exc.status)
        raise
    except Exception as exc:
        status, message = status_for(exc)
        if status >= 500 and not isinstance(exc, EXPECTED_REFUSALS):
            log.exception("%s %s failed", request.method, request.path)
        return error_response(request, message, status)
    finally:
        quiet = status < 400 and request.method == "GET" and (
            request.path in QUIET_PATHS or (request.path.startswith(QUIET_PREFIXES)
                                            and not request.path.endswith(".mjpeg")))
        if not quiet:  # the charts show the API's work, not the dashboard polling itself
            request.app[CORE].history.count(status)
        log.log(logging.DEBUG if quiet else logging.INFO, "%s %s %d %.1fms", request.method, request.path, status,
                (time.perf_counter() - started) * 1000)
