"""Camera routes for the dashboard and for anything that shows a picture: live annotated MJPEG, the latest annotated
frame, and the recent-events list with each object's snapshot.

These answer with real HTTP statuses on every listener (an <img> or a video player reads the status, not a JSON
body): 404 unknown camera or event, 503 no frame yet or too many viewers, 401 without a key when keys are on.
The key goes in `Authorization: Bearer …` (the dashboard fetches the stream itself) or, for players and <img>
tags that cannot send headers, in `?api_key=`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

from aiohttp import web

from ..api import auth
from ..api.common import CORE, json_response
from .live import LiveHub, TooManyViewers

log = logging.getLogger("perch.web")

WEB = "web"
LIVE: web.AppKey[LiveHub] = web.AppKey("live_hub", LiveHub)
BOUNDARY = "perchframe"
# Kernel send buffer of a stream socket: a few frames, so a stalled client holds little memory and is noticed soon.
STREAM_SNDBUF = 256 * 1024
# How often a viewer waiting for a frame (camera offline) checks whether its client is still there.
IDLE_CHECK_S = 1.0
EVENT_LIMIT = 50


def problem(message: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"success": False, "error": message, "code": status}, status, headers)


def _refuse(request: web.Request, message: str, status: int) -> web.StreamResponse:
    return problem(message, status, {"WWW-Authenticate": "Bearer"} if status == 401 else None)


auth.register_refusal(WEB, _refuse)


def _missing(name: str, cameras: Any) -> str:
    """Why there is no running camera `name`, and which cameras there are."""
    known = cameras.service.status() if cameras is not None else {}
    listed = ", ".join(sorted(known)) if known else "none are configured"
    state = known.get(name, {}).get("status")
    why = f"camera {name!r} is {state}" if state else f"unknown camera {name!r}"
    return f"{why}; cameras: {listed}"


def _worker(request: web.Request) -> Any:
    """The running camera named in the path, or a 404 that says which cameras exist."""
    name = request.match_info["name"]
    cameras = request.app[CORE].cameras
    worker = cameras.service.worker(name) if cameras is not None else None
    if worker is None:
        raise web.HTTPNotFound(text=_missing(name, cameras))
    return worker


def _not_found(exc: web.HTTPNotFound) -> web.Response:
    return problem(exc.text or "not found", 404)


@auth.dialect(WEB)
async def snapshot(request: web.Request) -> web.Response:
    try:
        worker = _worker(request)
    except web.HTTPNotFound as exc:
        return _not_found(exc)
    jpeg = await request.app[LIVE].view(worker).frame()
    if jpeg is None:
        reason = worker.reader.last_error or "it is still connecting"
        return problem(f"no frame from camera {worker.cfg.name} yet: {reason}", 503, {"Retry-After": "2"})
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


@auth.dialect(WEB)
async def stream(request: web.Request) -> web.StreamResponse:
    """multipart/x-mixed-replace: one JPEG part per annotated frame, newest frame first, until the client leaves."""
    try:
        worker = _worker(request)
    except web.HTTPNotFound as exc:
        return _not_found(exc)
    view = request.app[LIVE].view(worker)
    try:
        viewer = view.join()
    except TooManyViewers as exc:
        return problem(str(exc), 503, {"Retry-After": "5"})
    stall_s = request.app[CORE].settings.web.viewer_stall_s
    response = web.StreamResponse(headers={
        "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
        while True:
            jpeg = await viewer.next(IDLE_CHECK_S)
            if viewer.closed or transport is None or transport.is_closing():
                break
            if jpeg is None:
                continue
            part = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                    + jpeg + b"\r\n")
            try:
                await asyncio.wait_for(response.write(part), stall_s)
            except asyncio.TimeoutError:
                log.info("camera %s: a live viewer accepted nothing for %.0f s; dropped", view.name, stall_s)
                transport.abort()
                break
            viewer.sent += 1
    except ConnectionError:
        pass  # the client went away
    finally:
        view.leave(viewer)
    return response


@auth.dialect(WEB)
async def events(request: web.Request) -> web.Response:
    """Recent objects of all cameras (or `?camera=`), newest first: label, score, start/end, snapshot link."""
    started = time.perf_counter()
    cameras = request.app[CORE].cameras
    camera = request.query.get("camera") or None
    try:
        limit = int(request.query.get("limit") or 20)
    except ValueError:
        return problem("limit must be a whole number", 400)
    limit = max(1, min(limit, EVENT_LIMIT))
    if camera is not None and (cameras is None or camera not in cameras.service.status()):
        return problem(_missing(camera, cameras), 404)
    listed = cameras.service.recent.list(camera, limit) if cameras is not None else []
    for item in listed:
        item["snapshot"] = f"/cameras/{item['camera']}/events/{item['id']}.jpg" if item["has_snapshot"] else None
    return json_response({"success": True, "events": listed, "count": len(listed),
                          "processMs": round((time.perf_counter() - started) * 1000)})


@auth.dialect(WEB)
async def event_snapshot(request: web.Request) -> web.Response:
    cameras = request.app[CORE].cameras
    event_id = request.match_info["event_id"]
    found = cameras.service.recent.snapshot(event_id) if cameras is not None else None
    if found is None or found.camera != request.match_info["name"] or found.snapshot is None:
        return problem(f"no snapshot for event {event_id!r} (only the last {EVENT_LIMIT} events are kept)", 404)
    return web.Response(body=found.snapshot, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def _close_views(app: web.Application) -> None:
    # Streams never end on their own: end them before the server waits for its handlers to finish.
    app[LIVE].close()


def add_routes(app: web.Application) -> None:
    settings = app[CORE].settings.web
    app[LIVE] = LiveHub(settings.stream_fps, settings.stream_quality, settings.max_viewers_per_camera)
    app.on_shutdown.append(_close_views)
    app.router.add_get("/cameras/events", events)
    app.router.add_get("/cameras/{name}/stream.mjpeg", stream)
    app.router.add_get("/cameras/{name}/snapshot.jpg", snapshot)
    app.router.add_get("/cameras/{name}/events/{event_id}.jpg", event_snapshot)
