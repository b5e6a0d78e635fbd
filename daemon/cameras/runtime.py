"""The one entry point the app calls: cameras + MQTT as an async context manager.

    async with run_cameras(settings, detect, hardware_info=report, stats_provider=scheduler_stats) as cams:
        ...  # cams.status() for /v1/status; cams.publisher may be None (no `mqtt:` section)

`settings` is anything with `.cameras` (list of raw dicts or CameraConfig) and `.mqtt` (raw dict, MqttConfig or
None), e.g. the daemon's Settings. A bad camera entry is logged and reported in status, the others run; a bad
`mqtt:` section raises pydantic.ValidationError (the daemon should refuse to start, like any other bad setting).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..mqtt.config import MqttConfig, parse_mqtt
from ..mqtt.discovery import DeviceInfo
from ..mqtt.identity import BoxIdentity
from ..mqtt.publisher import MqttPublisher
from ..selection import accelerator_state
from ..version import VERSION
from ..vision.types import Detection
from .config import CameraConfig, CameraConfigError, parse_cameras
from .service import CameraService, DetectFn, EventSink

log = logging.getLogger(__name__)


def read_temperature(root: Path = Path("/")) -> float | None:
    """Hottest thermal zone in °C (SoC boards expose several; the hottest is what throttles), None if none."""
    temps = []
    for path in glob.glob(str(root / "sys/class/thermal/thermal_zone*/temp")):
        try:
            milli = int(Path(path).read_text().strip())
        except (OSError, ValueError):
            continue
        if -40_000 < milli < 150_000:
            temps.append(milli / 1000)
    return round(max(temps), 1) if temps else None


def _hardware(info: Any) -> tuple[str, str]:
    """(board model, accelerator kind) from the probe report, duck-typed so any version of it works."""
    model = "perchd"
    kind = "cpu"
    if info is None:
        return model, kind
    data = info.to_dict() if hasattr(info, "to_dict") else info
    if isinstance(data, dict):
        board = data.get("board") or {}
        model = board.get("model") or board.get("cpu_model") or model
        usable = [a.get("kind") for a in data.get("accelerators", []) if isinstance(a, dict) and a.get("usable")]
        kind = next((k for k in usable if k and k != "cpu"), usable[0] if usable else kind)
    return str(model), str(kind)


def registry_detect(registry: Any, model_id: str | None = None, min_confidence: float = 0.3) -> DetectFn:
    """The camera `detect` callable on top of the daemon's model registry: the same models, accelerators and
    worker pools as the REST routes, in the scheduler's camera lane (so neither side can starve the other)."""
    from ..scheduler import LANE_CAMERA

    async def detect(frame_bgr: np.ndarray) -> list[Detection]:
        model = await registry.get(model_id or registry.default_model_id())
        result = await model.detect_frame(frame_bgr, min_confidence, lane=LANE_CAMERA)
        return list(result.detections)

    return detect


def registry_stats(registry: Any) -> Callable[[], dict[str, Any]]:
    """stats_provider for run_cameras from the model registry: inference time, queue depth, device per model."""

    def stats() -> dict[str, Any]:
        loaded = [m for m in registry.status() if m.get("available", True)]
        times = [m["averageInferenceMs"] for m in loaded if m.get("averageInferenceMs") is not None]
        out: dict[str, Any] = {
            "queue_depth": sum(int(m.get("queueDepth", 0)) for m in loaded),
            "models": {
                m["id"]: {
                    "inference_ms": m.get("averageInferenceMs"),
                    "device": m.get("inferenceDevice"),
                    "accelerator": m.get("accelerator"),
                    "queue_depth": m.get("queueDepth"),
                }
                for m in loaded
            },
        }
        if times:
            out["inference_ms"] = round(sum(times) / len(times), 1)
        if loaded:
            out["device"] = loaded[0].get("accelerator") or out.get("device")
        state = accelerator_state(loaded, registry.hardware)
        # Home Assistant's "Accelerator status" diagnostic: the state, with the reason as an attribute.
        out["accelerator_status"], out["accelerator_reason"] = state["state"], state["reason"]
        return out

    return stats


@dataclass
class CameraRuntime:
    service: CameraService
    publisher: MqttPublisher | None
    cameras: list[CameraConfig]
    errors: list[CameraConfigError]

    def status(self) -> dict[str, Any]:
        return {
            "cameras": self.service.status(),
            "mqtt": self.publisher.status() if self.publisher is not None else None,
        }


@contextlib.asynccontextmanager
async def run_cameras(
    settings: Any,
    detect: DetectFn,
    hardware_info: Any = None,
    stats_provider: Callable[[], dict[str, Any]] | None = None,
    extra_sinks: tuple[EventSink, ...] = (),
    hardware_root: Path | None = None,
) -> AsyncIterator[CameraRuntime]:
    """stats_provider() may return {"inference_ms": float, "queue_depth": int, "device": str, "models": {...}}
    (the scheduler's view); those keys go into <prefix>/stats as they are."""
    cameras, errors = parse_cameras(getattr(settings, "cameras", None))
    mqtt_cfg: MqttConfig | None = parse_mqtt(getattr(settings, "mqtt", None))
    root = hardware_root or getattr(settings, "hardware_root", None) or Path("/")
    board, accel = _hardware(hardware_info)
    started = time.monotonic()
    service: CameraService | None = None

    def stats() -> dict[str, Any]:
        cams = service.status() if service is not None else {}
        detect_ms = [c["detect_ms"] for c in cams.values() if c.get("detect_ms")]
        out: dict[str, Any] = {
            "device": accel,
            "inference_ms": round(sum(detect_ms) / len(detect_ms), 1) if detect_ms else None,
            "temperature": read_temperature(Path(root)),
            "uptime_s": round(time.monotonic() - started),
            "version": VERSION,
            "cameras": cams,
        }
        if stats_provider is not None:
            out.update(stats_provider())
        return out

    publisher: MqttPublisher | None = None
    sinks: list[EventSink] = list(extra_sinks)
    if mqtt_cfg is not None:
        device = DeviceInfo(model=board, sw_version=VERSION, has_temperature=read_temperature(Path(root)) is not None)
        box = BoxIdentity.from_config(mqtt_cfg, getattr(settings, "name", None))
        publisher = MqttPublisher(mqtt_cfg, [c for c in cameras if c.enabled], device, stats, box)
        sinks.append(publisher)
    service = CameraService(cameras, detect, sinks, errors)
    if publisher is not None:
        await publisher.start()
    try:
        await service.start()
        log.info("cameras: %d running, %d refused", len(service.workers), len(errors))
        yield CameraRuntime(service, publisher, cameras, errors)
    finally:
        # Cameras first, so their final end events and zero counts still reach the broker.
        await service.stop()
        if publisher is not None:
            await publisher.stop()
