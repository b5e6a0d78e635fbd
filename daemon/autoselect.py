"""`detection.model: auto`: the most accurate detection model that keeps up on this board.

Candidates are the detection models with a COCO mAP in the manifest and a variant for the accelerator that `auto`
chose. Each one's speed on that accelerator is measured once (throughput with every worker busy, and the latency
of one image on its own, which is what a lone request gets) and cached in `cache_dir` under the board and the
model file's sha256, so later starts only read the cache. The rule:

- with cameras: the most accurate model whose throughput covers the cameras' total `detect.fps` plus 50 % headroom;
- without: the most accurate model whose single-image latency is under 100 ms (Frigate's deepstack timeout);
- when none qualifies: the fastest one. A model id in `detection.model` always wins (nothing is measured).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .manifest import ModelFileError, resolve, sha256_of

if TYPE_CHECKING:
    from .registry import ModelRegistry

log = logging.getLogger("perch.auto")

CACHE_FILE = "auto-model.json"
HEADROOM = 1.5
LATENCY_LIMIT_MS = 100.0
# Per model: single-image runs for the latency, and how long every worker runs for the throughput.
LATENCY_RUNS = 5
THROUGHPUT_S = 0.6


@dataclass
class Row:
    model_id: str
    coco_map: float
    fps: float  # images per second with every worker busy
    latency_ms: float  # one image on its own (the lone-request path)
    source: str = "measured"  # or "cache"
    keeps_up: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.model_id, "cocoMap": self.coco_map, "fps": round(self.fps, 1),
                "latencyMs": round(self.latency_ms, 1), "source": self.source, "keepsUp": self.keeps_up}


@dataclass
class AutoChoice:
    model_id: str
    accelerator: str
    rule: str
    table: list[Row] = field(default_factory=list)
    seconds: float = 0.0  # time spent measuring at this start (0 when every row came from the cache)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model_id, "accelerator": self.accelerator, "rule": self.rule,
                "measuredSeconds": round(self.seconds, 2), "table": [r.to_dict() for r in self.table]}


Measure = Callable[[str], tuple[float, float]]


def pick(rows: list[Row], cameras_fps: float | None) -> tuple[Row, str]:
    """The rule above, on a table of measurements; marks rows that keep up and says which rule applied."""
    if cameras_fps:
        need = cameras_fps * HEADROOM
        for r in rows:
            r.keeps_up = r.fps >= need
        rule = f"cameras ask for {cameras_fps:g} detections/s, {need:g}/s with 50 % headroom"
        fallback = max(rows, key=lambda r: r.fps)
    else:
        for r in rows:
            r.keeps_up = r.latency_ms < LATENCY_LIMIT_MS
        rule = f"no cameras: one image in under {LATENCY_LIMIT_MS:g} ms (Frigate's deepstack timeout)"
        fallback = min(rows, key=lambda r: r.latency_ms)
    fit = [r for r in rows if r.keeps_up]
    if not fit:
        return fallback, f"{rule}; none keeps up, so the fastest"
    return max(fit, key=lambda r: (r.coco_map, r.fps)), f"{rule}; the most accurate that keeps up"


def cameras_fps(settings: Any) -> float | None:
    """Total detect.fps of the enabled cameras with detection on (None without cameras)."""
    if not getattr(settings, "cameras", None):
        return None
    from .cameras.config import parse_cameras

    cams, _ = parse_cameras(settings.cameras)
    total = sum(c.detect.fps for c in cams if c.enabled and c.detect.enabled)
    return total or None


# ---- measuring ------------------------------------------------------------------------------------------------

def _test_jpeg() -> bytes:
    """A 640x480 camera-like picture (smooth gradients and a few shapes): decode cost like a real snapshot."""
    y, x = np.mgrid[0:480, 0:640]
    img = np.stack([(x * 255 // 640), (y * 255 // 480), ((x + y) * 255 // 1120)], axis=-1).astype(np.uint8)
    for i in range(6):
        cv2.rectangle(img, (40 + 90 * i, 60 + 40 * i), (120 + 90 * i, 200 + 40 * i), (40 * i, 200, 255 - 40 * i), -1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


def measure_model(registry: ModelRegistry, model_id: str) -> tuple[float, float]:
    """(images/s with every worker busy, ms for one image alone) of `model_id` as the daemon would run it."""
    model = registry.placement.load_detector(model_id)
    data = _test_jpeg()
    det, pool = model.detector, model.pool
    try:
        lone = pool.lone or pool.sessions[0]
        det.run_bytes(lone, data, 0.4, 10_000_000)
        latency = []
        for _ in range(LATENCY_RUNS):
            t = time.perf_counter()
            det.run_bytes(lone, data, 0.4, 10_000_000)
            latency.append((time.perf_counter() - t) * 1000)
        counts = [0] * len(pool.sessions)
        stop = time.perf_counter() + THROUGHPUT_S

        def work(i: int) -> None:
            # At least two images each, so a slow model is timed over whole images rather than a fraction.
            while counts[i] < 2 or time.perf_counter() < stop:
                det.run_bytes(pool.sessions[i], data, 0.4, 10_000_000)
                counts[i] += 1

        t0 = time.perf_counter()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(pool.sessions))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts) / (time.perf_counter() - t0), statistics.median(latency)
    finally:
        pool.close()


# ---- the cache --------------------------------------------------------------------------------------------------

def cache_key(registry: ModelRegistry, kind: str, model_id: str, sha: str) -> str:
    b = registry.hardware.board
    p = registry.placement
    threads = registry.settings.cpu.threads
    return "|".join(str(v) for v in (b.model, b.soc, b.cpu_model, p.cores(), kind, model_id, sha[:16],
                                     f"w{p.workers()}", f"t{threads}", f"l{p.lone_threads(kind)}"))


def read_cache(path: Path) -> dict[str, dict[str, float]]:
    try:
        data = json.loads(path.read_text())
        return dict(data.get("entries", {})) if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_cache(path: Path, entries: dict[str, dict[str, float]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"version": 1, "entries": entries}, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot cache the model measurements in %s: %s (they are taken again at the next start)",
                    path, exc)


def candidates(registry: ModelRegistry, kind: str) -> list[tuple[str, str]]:
    """(model id, file sha256) of the detection models with an mAP and a present file for accelerator `kind`."""
    out = []
    for model_id, entry in registry.manifest.by_task("detection").items():
        if entry.accuracy is None:
            continue
        for variant in registry.placement.variants_for(entry, kind):
            try:
                path = resolve(registry.settings.model_dir, variant, verify=False)
            except ModelFileError:
                continue
            out.append((model_id, variant.sha256 or sha256_of(path)))
            break
    return out


def _choose(registry: ModelRegistry, cameras: float | None, measure: Measure | None) -> AutoChoice:
    static = registry.static_default()
    # The accelerator: the best one that has a detection model file here (as for the static default), else the CPU.
    kind, found = "cpu", []
    for kind in registry.candidate_kinds():
        report = registry.hardware.get(kind)
        if kind != "cpu" and (report is None or not report.usable):
            return AutoChoice(static, kind, f"{kind} is forced but not usable here: the model built for it")
        found = candidates(registry, kind)
        if found:
            break
    if len(found) < 2:
        only = found[0][0] if found else static
        return AutoChoice(only, kind, "one candidate for this accelerator" if found else "no candidate files")
    path = registry.settings.cache_dir / CACHE_FILE
    cache = read_cache(path)
    rows: list[Row] = []
    spent = 0.0
    for model_id, sha in found:
        key = cache_key(registry, kind, model_id, sha)
        entry = registry.manifest.models[model_id]
        assert entry.accuracy is not None
        hit = cache.get(key)
        if hit is not None:
            rows.append(Row(model_id, entry.accuracy.coco_map, hit["fps"], hit["latency_ms"], "cache"))
            continue
        t0 = time.perf_counter()
        try:
            fps, latency = (measure or (lambda m: measure_model(registry, m)))(model_id)
        except Exception as exc:  # a model that cannot run here is no candidate; the log says why
            log.warning("auto: %s cannot be measured on %s: %s", model_id, kind, exc)
            continue
        finally:
            spent += time.perf_counter() - t0
        cache[key] = {"fps": fps, "latency_ms": latency}
        rows.append(Row(model_id, entry.accuracy.coco_map, fps, latency))
    if spent:
        write_cache(path, cache)
    if not rows:
        return AutoChoice(static, kind, "no candidate could be measured: the model built for the accelerator")
    best, rule = pick(rows, cameras)
    return AutoChoice(best.model_id, kind, rule, rows, spent)


async def choose_default(registry: ModelRegistry, cameras_fps: float | None, measure: Measure | None = None) -> None:
    """Let `auto` pick the default detector by measurement; a forced model id skips it. The choice is kept on the
    registry, which reads it back when it opens the default detector."""
    if registry.settings.detection.model == "auto":
        registry.auto = await choose(registry, cameras_fps, measure)


async def choose(registry: ModelRegistry, cameras: float | None, measure: Measure | None = None) -> AutoChoice:
    choice = await asyncio.to_thread(_choose, registry, cameras, measure)
    log.info("auto: detection model %s on %s (%s%s)", choice.model_id, choice.accelerator, choice.rule,
             f"; measured in {choice.seconds:.1f} s" if choice.seconds else "")
    for line in format_table(choice):
        log.info("auto: %s", line)
    return choice


def format_table(choice: AutoChoice) -> list[str]:
    lines = [f"{'model':<18}{'COCO mAP':>9}{'img/s':>8}{'1 image ms':>12}  keeps up  source"] if choice.table else []
    for r in choice.table:
        mark = "*" if r.model_id == choice.model_id else " "
        lines.append(f"{mark}{r.model_id:<17}{r.coco_map:>9.3f}{r.fps:>8.1f}{r.latency_ms:>12.1f}  "
                     f"{'yes' if r.keeps_up else 'no':<8}  {r.source}")
    return lines


