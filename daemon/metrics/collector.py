"""The Prometheus collector of one daemon: every value is read from the live objects when Prometheus scrapes, so
serving requests and running models pay nothing for gauges (only the request counter and the inference histogram
are updated as things happen, see requests.py and latency.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..version import VERSION

if TYPE_CHECKING:
    from ..core import Core

RequestKey = tuple[str, str, str]  # (dialect, route template, status)


class PerchCollector(Collector):
    def __init__(self, core: Core, requests: dict[RequestKey, int]) -> None:
        self.core = core
        self.requests = requests

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._models()
        yield from self._memory()
        yield from self._cameras()
        yield from self._host()

    def _requests(self) -> Iterator[Metric]:
        family = CounterMetricFamily("perch_requests", "HTTP requests answered, by dialect, route template and "
                                     "outcome status (for CodeProject-style errors, the code in the body)",
                                     labels=("dialect", "route", "status"))
        for (dialect, route, status), count in list(self.requests.items()):
            family.add_metric((dialect, route, status), count)
        yield family

    def _models(self) -> Iterator[Metric]:
        registry = self.core.registry
        loaded = GaugeMetricFamily("perch_model_loaded", "1 for each loaded model or task and the accelerator it "
                                   "runs on; 0 with device=\"none\" for one that failed to load",
                                   labels=("model", "device"))
        depth = GaugeMetricFamily("perch_queue_depth", "Jobs waiting in a model's queue", labels=("model",))
        rejected = CounterMetricFamily("perch_queue_rejected", "Requests refused because the model's queue was "
                                       "full (answered 503)", labels=("model",))
        timeouts = CounterMetricFamily("perch_queue_timeouts", "Jobs that waited longer than queue.timeout_s",
                                       labels=("model",))
        latency = HistogramMetricFamily("perch_inference_seconds", "Time spent in the model itself per inference",
                                        labels=("model", "device"))
        units: list[tuple[str, str, Any]] = [(m.id, m.kind, m) for m in list(registry.loaded.values())]
        units += [(t.key, t.kind, t) for t in list(registry.tasks.values())]
        for model_id, device, unit in units:
            loaded.add_metric((model_id, device), 1)
            depth.add_metric((model_id,), unit.pool.depth)
            rejected.add_metric((model_id,), unit.pool.stats.rejected)
            timeouts.add_metric((model_id,), unit.pool.stats.timed_out)
            buckets, total = unit.latency.snapshot()
            latency.add_metric((model_id, device), buckets, total)
        for model_id in list(registry.unavailable):
            loaded.add_metric((model_id, "none"), 0)
        yield from (loaded, depth, rejected, timeouts, latency)

    def _memory(self) -> Iterator[Metric]:
        memory = self.core.registry.memory_status()  # the budget's view (daemon/memory.py); RSS is process_*
        budget = GaugeMetricFamily("perch_memory_budget_bytes", "memory.budget_mb: what the daemon may hold")
        budget.add_metric((), memory["budgetMB"] * 2**20)
        held = GaugeMetricFamily("perch_model_memory_bytes", "RSS growth measured when each loaded model or task "
                                 "loaded, plus what its requests kept", labels=("model",))
        for m in memory["models"]:
            if m["memoryMB"] is not None:
                held.add_metric((m["id"],), m["memoryMB"] * 2**20)
        unloads = CounterMetricFamily("perch_memory_unloads", "Idle models unloaded to make room under the budget")
        unloads.add_metric((), memory["evictions"])
        refusals = CounterMetricFamily("perch_memory_refusals", "Loads refused because they could not fit the "
                                       "budget (answered 503)")
        refusals.add_metric((), memory["refusals"])
        yield from (budget, held, unloads, refusals)

    def _cameras(self) -> Iterator[Metric]:
        runtime = self.core.cameras
        status: dict[str, Any] = runtime.status() if runtime is not None else {}
        fps = GaugeMetricFamily("perch_camera_fps", "Frames per second read from the camera", labels=("camera",))
        detect_fps = GaugeMetricFamily("perch_camera_detect_fps", "Frames per second sent to the detector",
                                       labels=("camera",))
        up = GaugeMetricFamily("perch_camera_up", "1 while the camera delivers frames", labels=("camera",))
        for name, cam in (status.get("cameras") or {}).items():
            up.add_metric((name,), 1 if cam.get("online") else 0)
            fps.add_metric((name,), float(cam.get("fps") or 0.0))
            detect_fps.add_metric((name,), float(cam.get("detect_fps") or 0.0))
        mqtt = status.get("mqtt") or {}
        connected = GaugeMetricFamily("perch_mqtt_connected", "1 while connected to the MQTT broker (0 also when "
                                      "no broker is configured)")
        connected.add_metric((), 1 if mqtt.get("connected") else 0)
        yield from (fps, detect_fps, up, connected)

    def _host(self) -> Iterator[Metric]:
        from ..cameras.runtime import read_temperature

        temperature = read_temperature(Path(self.core.settings.hardware_root))
        if temperature is not None:  # absent rather than a made-up 0 on machines without a thermal zone
            family = GaugeMetricFamily("perch_temperature_celsius", "Hottest thermal zone of the board")
            family.add_metric((), temperature)
            yield family
        info = GaugeMetricFamily("perch_info", "Always 1; the labels say which daemon this is",
                                 labels=("version", "accelerator"))
        info.add_metric((VERSION, self.core.settings.accelerator), 1)
        yield info
