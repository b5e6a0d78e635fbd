"""A thin client of the RAUC service's D-Bus API (`de.pengutronix.rauc.Installer` on the system bus, RAUC 1.8).

D-Bus rather than the `rauc` command: the daemon runs unprivileged, and the service (root) does the parts that need
privileges (mounting a bundle to read its manifest, writing slots); its properties carry the install progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import UpdateError, busy, explain, no_rauc, rauc_down

BUS_NAME = "de.pengutronix.rauc"
INTERFACE = "de.pengutronix.rauc.Installer"
PROPERTIES = "org.freedesktop.DBus.Properties"
CALL_TIMEOUT_S = 10.0
# How often a running install is checked for a service that went away without a Completed signal.
POLL_S = 2.0

ProgressFn = Callable[[int, str], None]


@dataclass(frozen=True)
class Slot:
    name: str  # rootfs.0
    bootname: str | None  # A
    state: str  # booted | active | inactive
    boot_status: str | None  # good | bad
    version: str | None  # bundle.version RAUC recorded when it wrote the slot
    installed: str | None  # when RAUC last wrote it (ISO time)
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bootname": self.bootname, "state": self.state, "boot_status": self.boot_status,
                "version": self.version, "installed": self.installed, "device": self.device}


@dataclass(frozen=True)
class RaucStatus:
    compatible: str
    boot_slot: str | None  # bootname of the booted slot
    primary: str | None  # slot name the boot loader starts next
    operation: str  # idle | installing
    last_error: str
    slots: list[Slot] = field(default_factory=list)

    def slot_by_bootname(self, bootname: str | None) -> Slot | None:
        return next((s for s in self.slots if bootname and s.bootname == bootname), None)

    @property
    def booted(self) -> Slot | None:
        return self.slot_by_bootname(self.boot_slot) or next((s for s in self.slots if s.state == "booted"), None)

    def install_target(self) -> Slot | None:
        """The slot RAUC writes: the other bootable slot of the booted slot's class (A/B: the one not running)."""
        booted = self.booted
        cls = booted.name.split(".")[0] if booted else "rootfs"
        others = [s for s in self.slots if s.bootname and s.name.split(".")[0] == cls and s is not booted]
        return others[0] if others else None


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def _slot(name: str, props: dict[str, Any]) -> Slot:
    p = {k: _value(v) for k, v in props.items()}
    return Slot(name=name, bootname=p.get("bootname") or None, state=str(p.get("state", "")),
                boot_status=p.get("boot-status") or None, version=p.get("bundle.version") or None,
                installed=p.get("installed.timestamp") or None, device=p.get("device") or None)


class RaucClient:
    """One connection to the system bus; use as `async with RaucClient.connect() as rauc:`."""

    def __init__(self, bus: Any, installer: Any, properties: Any) -> None:
        self._bus = bus
        self._installer = installer
        self._properties = properties

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, timeout: float = CALL_TIMEOUT_S) -> AsyncIterator[RaucClient]:
        """Raises UpdateError `no-rauc` (no bus, no service, no rauc program) or `rauc-unavailable`."""
        try:
            from dbus_fast import BusType, DBusError
            from dbus_fast.aio import MessageBus
        except ImportError as exc:  # not on Linux, or installed without it
            raise no_rauc("the dbus-fast package is missing") from exc
        try:
            bus = await asyncio.wait_for(MessageBus(bus_type=BusType.SYSTEM).connect(), timeout)
        except Exception as exc:  # no socket, refused, auth failure, timeout
            raise _absent(f"no system D-Bus: {exc or type(exc).__name__}") from exc
        try:
            try:
                node = await asyncio.wait_for(bus.introspect(BUS_NAME, "/"), timeout)
            except DBusError as exc:
                raise _absent(f"{BUS_NAME} is not on the system bus: {exc.text}") from exc
            except asyncio.TimeoutError as exc:
                raise rauc_down(f"no answer within {timeout:g} s") from exc
            obj = bus.get_proxy_object(BUS_NAME, "/", node)
            try:
                client = cls(bus, obj.get_interface(INTERFACE), obj.get_interface(PROPERTIES))
            except Exception as exc:  # an object without RAUC's interface
                raise rauc_down(f"unexpected D-Bus object: {exc}") from exc
            yield client
        finally:
            bus.disconnect()

    async def _call(self, coro: Any) -> Any:
        from dbus_fast import DBusError

        try:
            return await asyncio.wait_for(coro, CALL_TIMEOUT_S)
        except asyncio.TimeoutError as exc:
            raise rauc_down(f"no answer within {CALL_TIMEOUT_S:g} s") from exc
        except DBusError as exc:
            raise explain(exc.text or exc.type) from exc

    async def status(self) -> RaucStatus:
        i = self._installer
        slots = [_slot(name, props) for name, props in await self._call(i.call_get_slot_status())]
        slots.sort(key=lambda s: s.name)
        try:
            primary = await self._call(i.call_get_primary())
        except UpdateError:
            primary = None  # boot loaders without the query
        return RaucStatus(
            compatible=await self._call(i.get_compatible()),
            boot_slot=(await self._call(i.get_boot_slot())) or None,
            primary=primary or None,
            operation=await self._call(i.get_operation()),
            last_error=await self._call(i.get_last_error()),
            slots=slots,
        )

    async def info(self, bundle: str) -> tuple[str, str]:
        """(compatible, version) of a bundle, after RAUC checked its signature."""
        compatible, version = await self._call(self._installer.call_info(bundle))
        return str(compatible), str(version)

    async def install(self, bundle: str, progress: ProgressFn | None = None) -> None:
        """Install and wait until RAUC is done; UpdateError with RAUC's reason when it refuses or fails."""
        from dbus_fast import DBusError

        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()

        def completed(result: int) -> None:
            if not done.done():
                done.set_result(int(result))

        def changed(interface: str, props: dict[str, Any], invalidated: list[str]) -> None:
            if interface == INTERFACE and "Progress" in props and progress is not None:
                percent, message, _depth = _value(props["Progress"])
                progress(int(percent), str(message))

        if await self._call(self._installer.get_operation()) != "idle":
            raise busy()
        self._installer.on_completed(completed)
        self._properties.on_properties_changed(changed)
        try:
            try:
                await asyncio.wait_for(self._installer.call_install_bundle(bundle, {}), CALL_TIMEOUT_S)
            except DBusError as exc:
                raise explain(exc.text or exc.type) from exc
            while True:
                try:
                    result = await asyncio.wait_for(asyncio.shield(done), POLL_S)
                    break
                except asyncio.TimeoutError:
                    # Raises when the service is gone: no Completed signal will come then.
                    await self._call(self._installer.get_operation())
            if result != 0:
                raise explain(await self._call(self._installer.get_last_error()))
        finally:
            self._installer.off_completed(completed)
            self._properties.off_properties_changed(changed)


def _absent(reason: str) -> UpdateError:
    """No RAUC program at all: not an image. The program without its service: the service is down."""
    return no_rauc(reason) if shutil.which("rauc") is None else rauc_down(reason)
