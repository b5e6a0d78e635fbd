"""Where a model runs: the accelerators to try (best first), the variant for each, one Session per worker (plus an
all-core Session for lone requests on the CPU), warmed, with the fallback reasons recorded for the log and status."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..accelerators.base import KINDS, AcceleratorError, OpenOptions, Session, backend_for_file, get_backend
from ..accelerators.probe import HardwareReport
from .config import Settings
from .failover import Engine, attach_failover
from .loaded import LoadedModel, ModelUnavailable, OpenedSessions
from .manifest import Manifest, ModelEntry, ModelFileError, Variant, load_labels, resolve
from .scheduler import WorkerPool
from .selection import no_model_reason
from .vision.detect import Detector

log = logging.getLogger("perch.models")


class Placement:
    def __init__(self, settings: Settings, manifest: Manifest, hardware: HardwareReport,
                 on_job_done: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.manifest = manifest
        self.hardware = hardware
        self._on_job_done = on_job_done

    # ---- which accelerator, which variant, how many workers -----------------------------------------------------

    def candidate_kinds(self) -> list[str]:
        """Accelerators to try, best first; a forced one first even if the probe says unusable (it then falls back)."""
        usable = [k for k in KINDS if k != "cpu" and k in self.hardware.usable_kinds()]
        forced = self.settings.accelerator
        if forced == "auto":
            return [*usable, "cpu"]
        return [forced] if forced == "cpu" else [forced, "cpu"]

    def variants_for(self, entry: ModelEntry, kind: str) -> list[Variant]:
        soc = (self.hardware.board.soc or "").lower()
        return [
            v for v in entry.variants
            if v.accelerator == kind and (not v.soc or kind != "rknn" or soc in v.soc)
        ]

    def cores(self) -> int:
        try:
            return len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return max(1, self.hardware.board.cores or os.cpu_count() or 1)

    def workers(self) -> int:
        return self.settings.cpu.workers or max(1, self.hardware.board.cores)

    def lone_threads(self, kind: str) -> int:
        """Threads of the all-core Session for a request that arrives alone; 0 = none (not the CPU, one core,
        or switched off with cpu.lone_threads: 0/1)."""
        if kind != "cpu":
            return 0
        wanted = self.settings.cpu.lone_threads
        threads = self.cores() if wanted is None else wanted
        return threads if threads > max(1, self.settings.cpu.threads) else 0

    def devices(self, kind: str) -> list[str | None]:
        if kind == "cpu":
            return [None] * self.workers()
        report = self.hardware.get(kind)
        return list(report.devices) if report and report.devices else [None]

    def _options(self, variant: Variant, device: str | None = None, threads: int | None = None,
                 extra: dict[str, str] | None = None) -> OpenOptions:
        return OpenOptions(threads=threads or self.settings.cpu.threads, device=device,
                           cache_dir=self.settings.cache_dir, sha256=variant.sha256, extra=dict(extra or {}))

    # ---- detection models ---------------------------------------------------------------------------------------

    def load_detector(self, model_id: str) -> LoadedModel:
        """Open a detection model on the best accelerator that works; ModelUnavailable says why none did."""
        entry = self.manifest.models[model_id]
        reasons: list[str] = []
        try:
            labels = load_labels(self.manifest, self.settings.model_dir, entry.labels)
        except ModelFileError as exc:
            raise ModelUnavailable(str(exc)) from exc
        for kind in self.candidate_kinds():
            variants = self.variants_for(entry, kind)
            if not variants:
                if kind != "cpu":
                    reasons.append(no_model_reason(self, kind, model_id))
                continue
            report = self.hardware.get(kind)
            if kind != "cpu" and report is not None and not report.usable:
                reasons.append(f"{kind}: {report.reason}")
                continue
            for variant in variants:
                try:
                    path = resolve(self.settings.model_dir, variant, verify=self.settings.verify_models)
                    loaded = self._open_detector(model_id, entry, variant, path, kind, labels)
                except (ModelFileError, AcceleratorError, ValueError) as exc:
                    reasons.append(f"{kind} ({variant.file}): {exc}")
                    log.warning("model %s: %s variant %s failed: %s", model_id, kind, variant.file, exc)
                    continue
                loaded.fallback_reasons = reasons
                loaded.failover = attach_failover(
                    model_id, kind, entry, variant, Engine(loaded.pool, loaded.detector, variant.file),
                    self.settings, lambda v, p: self._open_detector(model_id, entry, v, p, "cpu", labels))
                if reasons:
                    log.warning("model %s runs on %s after falling back: %s", model_id, kind, "; ".join(reasons))
                lone = loaded.pool.lone
                log.info("model %s loaded on %s (%s, %d workers%s)", model_id, kind, variant.file,
                         len(loaded.pool.sessions), f", {self.lone_threads(kind)}-thread lone session" if lone else "")
                return loaded
        raise ModelUnavailable("; ".join(reasons) or f"model {model_id} has no variant this machine can run")

    def _open_detector(self, model_id: str, entry: ModelEntry, variant: Variant, path: Path, kind: str,
                       labels: list[str]) -> LoadedModel:
        backend = get_backend(backend_for_file(kind, path, variant.runtime))
        sessions: list[Session] = []
        lone: Session | None = None
        try:
            for device in self.devices(kind):
                sessions.append(backend.open(path, self._options(variant, device)))
            lone_threads = self.lone_threads(kind)
            if lone_threads:
                lone = backend.open(path, self._options(variant, threads=lone_threads))
            if entry.input is None or entry.decoder is None:
                raise ValueError(f"model {model_id} has no input spec or decoder in the manifest")
            detector = Detector(entry.input, entry.decoder, labels, sessions[0])
            # Warm every session with one inference: first-inference failures (delegates, drivers) show here.
            for s in [*sessions, *([lone] if lone is not None else [])]:
                detector.run_frame(s, detector.warmup_input(), 1.0)
        except BaseException:
            for s in [*sessions, *([lone] if lone is not None else [])]:
                s.close()
            raise
        pool = WorkerPool(model_id, sessions, self.settings.queue.max_depth, self.settings.queue.timeout_s,
                          on_job_done=self._on_job_done, lone=lone)
        return LoadedModel(model_id, entry, variant, path, kind, pool, detector)

    # ---- task models --------------------------------------------------------------------------------------------

    def open_sessions(self, model_id: str, count: int, warm: Callable[[Session], object] | None = None,
                      extra: dict[str, str] | None = None) -> OpenedSessions:
        """`count` Sessions of one model on the best accelerator that has a variant, falling back like detection.

        `warm` runs once per session inside the attempt, so a delegate that loads but cannot run falls back too.
        `extra` goes to the backend as OpenOptions.extra (e.g. the dlib runtime's landmark model path).
        """
        entry = self.manifest.models.get(model_id)
        if entry is None:
            raise ModelUnavailable(f"unknown model {model_id!r}")
        reasons: list[str] = []
        for kind in self.candidate_kinds():
            report = self.hardware.get(kind)
            variants = self.variants_for(entry, kind)
            if kind != "cpu" and variants and report is not None and not report.usable:
                reasons.append(f"{kind}: {report.reason}")
                continue
            devices = self.devices(kind)
            for variant in variants:
                sessions: list[Session] = []
                try:
                    path = resolve(self.settings.model_dir, variant, verify=self.settings.verify_models)
                    backend = get_backend(backend_for_file(kind, path, variant.runtime))
                    for i in range(count):
                        sessions.append(backend.open(path, self._options(variant, devices[i % len(devices)],
                                                                         extra=extra)))
                        if warm is not None:
                            warm(sessions[-1])
                except (ModelFileError, AcceleratorError, ValueError) as exc:
                    for s in sessions:
                        s.close()
                    reasons.append(f"{kind} ({variant.file}): {exc}")
                    log.warning("model %s: %s variant %s failed: %s", model_id, kind, variant.file, exc)
                    continue
                return OpenedSessions(model_id, kind, path, sessions, reasons)
        raise ModelUnavailable("; ".join(reasons) or f"model {model_id} has no variant this machine can run")

    def model_file(self, model_id: str) -> Path:
        """The verified CPU file of a model that is data rather than a Session of its own."""
        entry = self.manifest.models.get(model_id)
        if entry is None:
            raise ModelUnavailable(f"unknown model {model_id!r}")
        variants = [v for v in entry.variants if v.accelerator == "cpu"]
        if not variants:
            raise ModelUnavailable(f"model {model_id} has no CPU file")
        try:
            return resolve(self.settings.model_dir, variants[0], verify=self.settings.verify_models)
        except ModelFileError as exc:
            raise ModelUnavailable(str(exc)) from exc
