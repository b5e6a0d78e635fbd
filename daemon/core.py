"""The daemon's shared state, independent of HTTP: settings, hardware report, manifest and loaded models.

Both listeners (CodeProject and DeepStack semantics) and the camera loop use one Core.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from ..accelerators.probe import HardwareReport, probe
from . import autoselect
from .config import Settings
from .manifest import Manifest, load_manifest
from .registry import ModelRegistry, ModelUnavailable
from .sdnotify import Notifier
from .selection import accelerator_state
from .store import STORE_FILE, Store, apply_saved_settings
from .web.history import History

log = logging.getLogger("perch.core")


class Core:
    def __init__(self, settings: Settings, manifest: Manifest | None = None,
                 hardware: HardwareReport | None = None) -> None:
        self.settings = settings
        self.manifest = manifest or load_manifest()
        self.hardware = hardware or probe(settings.hardware_root)
        self.hostname = socket.gethostname()
        self.started = time.time()
        self.notifier = Notifier()
        self._loop_alive = time.monotonic()
        self.registry = ModelRegistry(settings, self.manifest, self.hardware, on_job_done=self._beat)
        self.ready = False
        self.cameras: Any = None  # CameraRuntime while cameras/MQTT run (daemon/cameras/runtime.py)
        self.update: Any = None  # UpdateService (daemon/update/service.py), made on first use
        self._store: Store | None = None
        self.custom_model_ids: set[str] = set()
        self.custom_model_problems: dict[str, str] = {}
        # Requests/s and inference latency of the last 10 minutes, for the dashboard's charts.
        self.history = History()

    def _watchdog_limit(self) -> float:
        interval = self.notifier.watchdog_interval()
        return interval * 0.75 if interval else 0.0

    def _beat(self) -> None:
        """Called by every inference worker after each job and once a second when idle.

        The watchdog is fed only while no accelerator call has hung and the event loop still turns, so a hung
        NPU/TPU call or a blocked loop makes systemd restart the service.
        """
        limit = self._watchdog_limit()
        if limit and self.registry.stuck_for() < limit and time.monotonic() - self._loop_alive < limit:
            self.notifier.watchdog()

    async def loop_heartbeat(self) -> None:
        interval = self.notifier.watchdog_interval()
        period = min(1.0, interval / 4) if interval else 1.0
        while True:
            self._loop_alive = time.monotonic()
            if not self.registry.loaded:
                # No worker threads to feed the watchdog (e.g. the model is missing): the loop does it.
                self._beat()
            await asyncio.sleep(period)

    @property
    def store(self) -> Store:
        """Faces and run-time settings (SQLite under the state directory), opened on first use."""
        if self._store is None:
            self._store = Store(self.settings.state_dir / STORE_FILE)
        return self._store

    def refresh_custom_models(self) -> dict[str, str]:
        """Read the custom-model directory into the manifest (at start-up); returns problems by file."""
        from . import custom_models

        scanned = custom_models.scan(self.settings.effective_custom_model_dir)
        self.custom_model_problems = custom_models.apply(self.manifest, scanned, self.custom_model_ids)
        return self.custom_model_problems

    async def rescan_custom_models(self) -> dict[str, str]:
        """Re-read the custom-model directory while serving (a dropped-in model needs no restart): files are read
        on a thread, the manifest is changed on the event loop where requests read it."""
        from . import custom_models

        scanned = await asyncio.to_thread(custom_models.scan, self.settings.effective_custom_model_dir)
        self.custom_model_problems = custom_models.apply(self.manifest, scanned, self.custom_model_ids)
        return self.custom_model_problems

    def _load_state(self) -> None:
        """Settings changed through /v1/settings on an earlier run, and custom models, before the default model."""
        try:
            apply_saved_settings(self.settings, self.store)
        except (sqlite3.Error, OSError) as exc:
            # Faces and saved settings are then unavailable, detection is not: keep serving.
            log.error("state database in %s cannot be opened: %s", self.settings.state_dir, exc)
        self.refresh_custom_models()

    async def start(self, status: Callable[[str], object] | None = None) -> None:
        """Load the default detection model; a missing model leaves the daemon up with the reason in status."""
        await asyncio.to_thread(self._load_state)
        for acc in self.hardware.accelerators:
            if acc.kind != "cpu" and not acc.usable:
                log.info("accelerator %s not used: %s", acc.kind, acc.reason)
        if self.settings.detection.model == "auto":
            if status:
                status("choosing the detection model")
            await autoselect.choose_default(self.registry, autoselect.cameras_fps(self.settings))
        model_id = self.registry.default_model_id()
        if status:
            status(f"loading model {model_id}")
        try:
            model = await self.registry.get(model_id)
            log.info("default detection model %s on %s", model_id, model.inference_device)
        except ModelUnavailable as exc:
            log.error("default detection model %s is unavailable: %s", model_id, exc)
        self.ready = True

    async def close(self) -> None:
        await asyncio.to_thread(self.registry.close)
        if self._store is not None:
            self._store.close()
            self._store = None

    def system_status(self) -> dict[str, Any]:
        models = self.registry.status()
        return {
            "hostname": self.hostname,
            "uptimeSeconds": round(time.time() - self.started, 1),
            "accelerator": self.settings.accelerator,
            "hardware": self.hardware.to_dict(),
            "models": models,
            # Is the default detector on the best usable accelerator, and if not, why (reasons, degraded).
            "acceleratorStatus": accelerator_state(models, self.hardware),
            "queueDepth": sum(m.get("queueDepth", 0) for m in models),
            "memory": self.registry.memory_status(),
            "autoDetection": self.registry.auto.to_dict() if self.registry.auto is not None else None,
            **(self.cameras.status() if self.cameras is not None else {"cameras": {}, "mqtt": None}),
        }
