"""aiohttp app factory and the daemon's lifecycle: probe -> load models -> serve -> (cameras -> mqtt)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from types import ModuleType

from aiohttp import web

from .api import (
    auth,
    codeproject,
    faces,
    image,
    rapyd,
    raypack,
    roboflow,
    status,
    text,
    ultralytics,
    update_status,
)
from .api import settings as settings_routes  # not `settings`: run_daemon's argument has that name
from .api.admission import admission_middleware
from .api.common import CODEPROJECT, CORE, DEEPSTACK, SEMANTICS
from .api.middleware import perch_middleware
from .config import Settings
from .core import Core
from .graceful import drain_timeout, stop_runners
from .metrics import serve as metrics
from .openapi import routes as openapi
from .update.service import update_lifecycle
from .web import routes as web_routes

log = logging.getLogger("perch.app")


class ListenError(Exception):
    """The main listener could not bind; the message says which address and how to change it."""


def create_app(core: Core, semantics: str = CODEPROJECT) -> web.Application:
    """One listener's app. Both listeners share the Core (models, queues); only error semantics differ."""
    # Base64 bodies (Roboflow) are a third larger than the image they carry.
    max_body = int(core.settings.limits.max_upload_mb * 1024 * 1024 * 1.4) + 65536
    app = web.Application(middlewares=[perch_middleware, admission_middleware], client_max_size=max_body)
    app[CORE] = core
    app[SEMANTICS] = semantics
    auth.install(app)
    for module in dialect_modules():
        module.add_routes(app)
    metrics.install(app)
    openapi.add_routes(app)
    if semantics == CODEPROJECT:
        web_routes.add_routes(app)
    return app


def dialect_modules() -> list[ModuleType]:
    """Route modules in registration order. Catch-all patterns (Roboflow's /<dataset>/<version>) go last."""
    return [status, codeproject, faces, image, text, settings_routes,
            ultralytics, raypack, rapyd, update_status, roboflow]


async def _cameras_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Cameras and MQTT start after the models, and stop before them (their last events still get published)."""
    core = app[CORE]
    if not core.settings.cameras and not core.settings.mqtt:
        yield
        return
    from .cameras.runtime import registry_detect, registry_stats, run_cameras

    async with run_cameras(core.settings, registry_detect(core.registry), hardware_info=core.hardware,
                           stats_provider=registry_stats(core.registry)) as cameras:
        core.cameras = cameras
        if cameras.publisher is not None and core.update is not None:
            core.update.attach_mqtt(cameras.publisher)  # Home Assistant's update entity (daemon/update)
        yield
        core.cameras = None


async def _core_lifecycle(app: web.Application) -> AsyncIterator[None]:
    core = app[CORE]
    await core.start(status=core.notifier.status)
    heartbeat = asyncio.create_task(core.loop_heartbeat(), name="perch-heartbeat")
    yield
    heartbeat.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await heartbeat
    await core.close()


async def run_daemon(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set)."""
    core = Core(settings)
    main_app = create_app(core, CODEPROJECT)
    main_app.cleanup_ctx.append(_core_lifecycle)
    main_app.cleanup_ctx.append(update_lifecycle)  # before MQTT: its entity shows the last update's result
    main_app.cleanup_ctx.append(_cameras_lifecycle)
    listeners: list[tuple[web.Application, int]] = [(main_app, settings.port)]
    if settings.legacy_port and settings.legacy_port != settings.port:
        listeners.append((create_app(core, DEEPSTACK), settings.legacy_port))

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    runners: list[web.AppRunner] = []
    try:
        bound: list[int] = []
        for app, port in listeners:
            runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                   shutdown_timeout=drain_timeout(settings.queue.timeout_s))
            await runner.setup()
            runners.append(runner)
            semantics = app[SEMANTICS]
            try:
                await web.TCPSite(runner, settings.host, port, reuse_address=True).start()
            except OSError as exc:
                if app is main_app:
                    raise ListenError(f"cannot listen on {settings.host}:{port}: {exc.strerror or exc}"
                                      " (set `port` / PERCHD_PORT / --port)") from exc
                # The legacy DeepStack port is a convenience: the main API keeps serving without it.
                log.error("cannot listen on %s:%d for DeepStack clients: %s; continuing without it"
                          " (set legacy_port / PERCHD_LEGACY_PORT, 0 disables)", settings.host, port,
                          exc.strerror or exc)
                continue
            bound.append(port)
            log.info("listening on %s:%d (%s semantics)", settings.host, port, semantics)
        ports = ", ".join(str(p) for p in bound)
        log.info("perchd ready")
        core.notifier.ready(f"serving on port(s) {ports}")
        await stop.wait()
        log.info("stopping")
        core.notifier.stopping("stopping")
    finally:
        await stop_runners(runners, drain_timeout(settings.queue.timeout_s))
