"""The daemon's side of updates: the check after a reboot, the release feed, installs from Home Assistant and the
state the status route and the MQTT entity show. One per daemon (`for_core`), started by `update_lifecycle`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from . import record as rec
from .errors import UpdateError
from .feed import Release, fetch_latest
from .ha_entity import UpdateEntity, state_payload
from .installer import Reporter, install
from .release import image_version
from .status import check_after_boot, gather
from .versions import newer

log = logging.getLogger("perch.update")


class UpdateService:
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.cfg = settings.update
        self.latest: Release | None = None
        self.feed_error: str | None = None
        self.feed_checked: float | None = None  # time.monotonic() of the last answer or failure
        self.in_progress = False
        self.percent: int | None = None
        self.install_error: str | None = None  # the last Home Assistant install's failure, until the next one
        self.record: rec.UpdateRecord | None = None
        self.entity: UpdateEntity | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._feed_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- life cycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            self.record = await check_after_boot(self.settings.state_dir, self.cfg.release_file)
        except Exception:  # never let the update bookkeeping stop the daemon
            log.exception("update: checking the last update failed")
        if self.cfg.feed_url:
            self._spawn(self._feed_loop(), "update-feed")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- release feed -------------------------------------------------------------------------------------------

    async def check_feed(self, max_age_s: float | None = None) -> Release | None:
        """The newest release in the feed (None without a feed); asks the feed only when the answer is older than
        `max_age_s` (default: the check interval). A failing feed is reported in `feed_error`, never raised."""
        if not self.cfg.feed_url:
            return None
        max_age = self.cfg.check_interval_h * 3600 if max_age_s is None else max_age_s
        async with self._feed_lock:
            if self.feed_checked is not None and time.monotonic() - self.feed_checked < max_age:
                return self.latest
            try:
                self.latest, self.feed_error = await fetch_latest(self.cfg.feed_url), None
                if self.latest is not None:
                    log.info("update: newest release in the feed: %s", self.latest.version)
            except UpdateError as exc:
                self.feed_error = exc.message
                log.warning("update: %s", exc.message)
            self.feed_checked = time.monotonic()
        self.publish()
        return self.latest

    async def _feed_loop(self) -> None:
        while True:
            await self.check_feed(max_age_s=0)
            await asyncio.sleep(self.cfg.check_interval_h * 3600)

    # -- state --------------------------------------------------------------------------------------------------

    def installed_version(self) -> str | None:
        return image_version(self.cfg.release_file)

    def update_available(self) -> bool:
        return self.latest is not None and newer(self.latest.version, self.installed_version())

    async def status(self) -> dict[str, Any]:
        out = await gather(self.settings.state_dir, self.cfg.release_file)
        latest = self.latest
        out.update(
            in_progress=self.in_progress,
            update_percentage=self.percent,
            feed={"url": self.cfg.feed_url, "error": self.feed_error,
                  "latest": latest.model_dump() if latest else None},
            update_available=self.update_available(),
            mqtt_install=self.cfg.allow_mqtt_install,
        )
        return out

    def publish(self) -> None:
        if self.entity is None:
            return
        with contextlib.suppress(rec.RecordError):
            self.record = rec.load(self.settings.state_dir)
        state = state_payload(self.installed_version(), self.latest, self.record, self.in_progress, self.percent,
                              self.install_error)
        self.entity.publish(state, self.record)

    # -- Home Assistant -----------------------------------------------------------------------------------------

    def attach_mqtt(self, publisher: Any) -> None:
        """Add the `update` entity to the daemon's MQTT publisher (called once MQTT runs). Only on the SD image (its
        release file exists) or where an update was recorded: a pip install has no image to update."""
        if self.installed_version() is None and self.record is None:
            log.debug("update: not a Perch image (%s missing): no update entity", self.cfg.release_file)
            return
        self.entity = UpdateEntity(publisher, self.cfg.allow_mqtt_install, self._install_requested)
        self.entity.attach()
        self.publish()

    def _install_requested(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(lambda: self._spawn(self.install_latest(), "update-install"))

    async def install_latest(self) -> rec.UpdateRecord | None:
        """Install the feed's newest release (Home Assistant's Install button). Failures are logged and shown on
        the entity, never raised: nobody waits on this call."""
        if not self.cfg.allow_mqtt_install:
            log.warning("update: install request over MQTT ignored (update.allow_mqtt_install is off)")
            return None
        if self.in_progress:
            log.warning("update: install request ignored: an update is already being installed")
            return None
        self.in_progress, self.percent, self.install_error = True, 0, None
        self.publish()
        try:
            release = await self.check_feed(max_age_s=0)
            if self.feed_error:
                raise UpdateError("feed", self.feed_error)
            if release is None:
                raise UpdateError("feed", "no release feed is configured, or it lists no release")
            if not newer(release.version, self.installed_version()):
                raise UpdateError("up-to-date", f"{release.version} is already installed")
            reporter = Reporter(download=self._download_progress, progress=self._install_progress,
                                started=lambda r: self.publish())
            return await install(self.settings.state_dir, self.cfg.release_file, release.url, reporter,
                                 release.sha256)
        except UpdateError as exc:
            self.install_error = exc.message
            log.error("update: install from Home Assistant failed: %s", exc.message)
            return None
        except Exception as exc:
            self.install_error = f"install failed: {exc}"
            log.exception("update: install from Home Assistant failed")
            return None
        finally:
            self.in_progress, self.percent = False, None
            self.publish()

    # Home Assistant shows one percentage: the download is the first half, RAUC's install the second.
    def _download_progress(self, done: int, total: int | None) -> None:
        self._set_percent(int(50 * done / total) if total else 0)

    def _install_progress(self, percent: int, message: str) -> None:
        self._set_percent(50 + percent // 2)

    def _set_percent(self, percent: int) -> None:
        if percent != self.percent:
            self.percent = percent
            self.publish()


def for_core(core: Any) -> UpdateService:
    """The daemon's update service, made on first use (the status routes work without the lifecycle too)."""
    if getattr(core, "update", None) is None:
        core.update = UpdateService(core.settings)
    service: UpdateService = core.update
    return service


async def update_lifecycle(app: Any) -> AsyncIterator[None]:
    """aiohttp cleanup_ctx step: the check after a reboot, the feed loop; stopped with the daemon."""
    from ..api.common import CORE

    service = for_core(app[CORE])
    await service.start()
    yield
    await service.stop()
