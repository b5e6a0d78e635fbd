"""`perchd bench`: raw in-process model speed, the REST route, the camera lane and (when present) DOODS2, measured
side by side in one run and printed as ratios.

Targets (DESIGN.md §7; ratios, because these machines are shared and noisy): REST p50 at concurrency 1 ≤ 1.10 × the
best raw latency (the better of one 1-thread and one all-core interpreter); REST req/s at concurrency 8 ≥ 0.90 × raw
throughput of one 1-thread interpreter per worker; RSS with the default detector ≤ 200 MiB; with DOODS2 measured in
the same run, ≥ 1.8 × its req/s at concurrency 8 and no slower at concurrency 1. A peer that is not present is not
compared: DESIGN.md's readings from another day are quoted as such, never divided into.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from ..accelerators.probe import probe
from .bench_load import Client, Daemon, Post, Raw, multipart_post, pct, run
from .bench_peers import Doods, camera_config, find_doods
from .config import Settings
from .manifest import load_manifest, resolve
from .registry import ModelRegistry

DEFAULT_IMAGE = "dog_bicycle_car.jpg"
ANCHORS = ("DESIGN.md §7 readings of 2026-11-30 (another run, quoted, not compared): best raw 11-16 ms,"
           " raw 2 x 1-thread 103-114 img/s, DOODS2 20.6 ms p50 and 46-49 req/s")


def _find_image(arg: str | None, settings: Settings) -> Path:
    if arg:
        return Path(arg)
    for base in (os.environ.get("PERCHD_SHARED"), settings.model_dir.parent, Path.cwd().parent / "shared"):
        if base and (Path(base) / "images" / DEFAULT_IMAGE).is_file():
            return Path(base) / "images" / DEFAULT_IMAGE
    raise SystemExit(f"no --image given and {DEFAULT_IMAGE} not found next to the model directory")


def _registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(settings, load_manifest(), probe(settings.hardware_root))


def _cameras_lane(settings: Settings, model_id: str, data: bytes, cameras: int, seconds: float) -> dict[str, Any]:
    """REST latency at concurrency 1 while `cameras` file:// cameras run through the same worker pools."""
    with tempfile.TemporaryDirectory(prefix="perch-bench-cams-") as tmp:
        daemon = Daemon(settings, model_id, camera_config(data, cameras, 5.0, Path(tmp)))
        try:
            status_url = f"http://127.0.0.1:{daemon.port}/v1/status/system-status"
            deadline = time.monotonic() + 30
            cams: dict[str, Any] = {}
            while time.monotonic() < deadline:
                with urllib.request.urlopen(status_url, timeout=5) as resp:
                    cams = json.load(resp).get("cameras") or {}
                if len(cams) == cameras and all(c.get("detect_fps", 0) > 0 for c in cams.values()):
                    break
                time.sleep(0.5)
            rest = run(_latency_only(multipart_post(daemon.port, data), seconds))
            with urllib.request.urlopen(status_url, timeout=5) as resp:
                cams = json.load(resp).get("cameras") or {}
            rest["cameras"] = cameras
            rest["camera_detections_per_s"] = sum(c.get("detect_fps", 0) for c in cams.values())
            return rest
        finally:
            daemon.stop()


def _lone_share(port: int) -> dict[str, int]:
    """How many of the daemon's detections ran alone on the all-core interpreter (the rest on 1-thread workers)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status/system-status", timeout=5) as resp:
        models = json.load(resp).get("models") or []
    model = next((m for m in models if m.get("task") == "detection" and "processed" in m), {})
    return {"processed": int(model.get("processed", 0)), "processed_alone": int(model.get("processedAlone", 0))}


async def _latency_only(post: Post, seconds: float) -> dict[str, Any]:
    client = Client(post, 2)
    try:
        await client.warm()
        lat = await client.latency(seconds)
    finally:
        await client.close()
    return {"p50": statistics.median(lat), "p99": pct(lat, 0.99)}


def _start_doods(settings: Settings, model_id: str, found: tuple[Path, Path]) -> Doods:
    entry = load_manifest().models[model_id]
    variant = next(v for v in entry.variants if v.accelerator == "cpu" and v.file.endswith(".tflite"))
    assert entry.labels is not None
    # Absolute paths: DOODS2 runs in its own checkout.
    return Doods(*found, resolve(settings.model_dir, variant).resolve(),
                 resolve(settings.model_dir, entry.labels).resolve())


async def _interleaved(raw: Raw, rest: Post, peer: Post | None, seconds: float, levels: list[int],
                       rounds: int) -> dict[str, Any]:
    """Every figure is taken in `rounds` short blocks, taking turns (raw, REST, DOODS2, raw, …), so that the load of
    a shared machine falls on all of them alike; each figure sums `seconds` of measuring."""
    block = seconds / rounds
    top = max(levels)
    ours = Client(rest, top + 2)
    theirs = Client(peer, top + 2) if peer else None
    lat: dict[str, list[float]] = {"one": [], "lone": [], "rest": [], "peer": []}
    done: dict[str, list[float]] = {}

    def add(key: str, result: tuple[int, float]) -> None:
        n, t = done.get(key, [0.0, 0.0])
        done[key] = [n + result[0], t + result[1]]

    try:
        await ours.warm()
        if theirs:
            await theirs.warm()
        for _ in range(rounds):
            lat["one"] += await asyncio.to_thread(raw.latency, raw.sessions[0], block)
            lat["lone"] += await asyncio.to_thread(raw.latency, raw.lone, block)
            lat["rest"] += await ours.latency(block)
            if theirs:
                lat["peer"] += await theirs.latency(block)
            add("raw", await asyncio.to_thread(raw.throughput, block))
            for level in levels:
                add(f"rest{level}", await ours.throughput(level, block))
            if theirs:
                for level in sorted({1, top}):
                    add(f"peer{level}", await theirs.throughput(level, block))
    finally:
        await ours.close()
        if theirs:
            await theirs.close()

    def rate(key: str) -> float:
        return done[key][0] / done[key][1]

    out: dict[str, Any] = {
        "raw": {"p50_1thread": statistics.median(lat["one"]), "p50_all": statistics.median(lat["lone"]),
                "p99_all": pct(lat["lone"], 0.99), "rps_workers": rate("raw")},
        "rest": {"p50": statistics.median(lat["rest"]), "p99": pct(lat["rest"], 0.99),
                 "rps": {level: rate(f"rest{level}") for level in levels}},
        "doods2": None,
    }
    if theirs:
        out["doods2"] = {"p50": statistics.median(lat["peer"]), "p99": pct(lat["peer"], 0.99),
                         "rps": {level: rate(f"peer{level}") for level in sorted({1, top})}}
    return out


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    if args.models:
        return run_models(settings)
    image = _find_image(args.image, settings)
    data = image.read_bytes()
    levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    top = max(levels)
    cameras = [int(c) for c in str(args.cameras).split(",") if c.strip() and int(c) > 0]
    found = find_doods(args.doods)
    # The model DESIGN.md's readings and DOODS2 use, unless one is named: `auto` may pick another on this board.
    model_id = args.model or _registry(settings).static_default()
    print(f"perchd bench: {image.name} ({len(data) // 1024} KiB), {os.cpu_count()} cores, {args.seconds:g} s per"
          f" figure in {args.rounds} interleaved blocks, load average {os.getloadavg()[0]:.2f} at the start",
          flush=True)
    raw = Raw(settings, model_id, data)
    daemon = Daemon(settings, model_id)
    peer = _start_doods(settings, model_id, found) if found else None
    try:
        figures = run(_interleaved(raw, multipart_post(daemon.port, data), peer.post(data) if peer else None,
                                   args.seconds, levels, args.rounds))
        figures["rest"].update(rss=daemon.rss_mb(), ready_s=daemon.ready_s, **_lone_share(daemon.port))
    finally:
        daemon.stop()
        if peer:
            peer.stop()
    figures["raw"].update(model=raw.model.id, device=raw.model.inference_device, workers=len(raw.sessions),
                          lone_threads=raw.lone_threads)
    raw.close()
    lanes = [_cameras_lane(settings, model_id, data, n, args.seconds) for n in cameras]
    report = {"image": image.name, "seconds": args.seconds, "load_end": os.getloadavg()[0], **figures,
              "cameras": lanes}
    for line in format_report(report, top):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


def _target(label: str, value: float, op: str, limit: float, unit: str = "") -> str:
    met = value <= limit if op == "<=" else value >= limit
    shown = f"{value:>8.0f}" if unit else f"{value:>8.2f}"
    return f"  {label:<44}{shown}{unit}  target {op} {limit:g}{unit}  {'met' if met else 'NOT MET'}"


def format_report(r: dict[str, Any], top: int) -> list[str]:
    raw, rest = r["raw"], r["rest"]
    best = min(raw["p50_1thread"], raw["p50_all"])
    lines = [
        f"model {raw['model']} on {raw['device']}: {raw['workers']} workers x 1 thread"
        + (f", lone-request interpreter {raw['lone_threads']} threads" if raw["lone_threads"] else ""),
        "raw, in-process (decode + preprocess + invoke + postprocess)",
        f"  latency p50, one 1-thread interpreter      {raw['p50_1thread']:8.1f} ms",
        f"  latency p50, one all-core interpreter      {raw['p50_all']:8.1f} ms",
        f"  throughput, {raw['workers']} x 1-thread interpreters      {raw['rps_workers']:8.1f} img/s",
        f"REST, `perchd run` subprocess (ready in {rest['ready_s']:.2f} s)",
        f"  latency p50 / p99 at concurrency 1         {rest['p50']:8.1f} / {rest['p99']:.1f} ms",
        "  req/s at concurrency " + " / ".join(str(k) for k in rest["rps"]) + "      "
        + " / ".join(f"{v:.1f}" for v in rest["rps"].values()),
        f"  RSS after the run                          {rest['rss']:8.0f} MiB",
        f"  detections run alone on the all-core interpreter: {rest['processed_alone']} of {rest['processed']}"
        " (the rest found others queued or running and ran on a 1-thread worker)",
    ]
    for lane in r["cameras"]:
        lines.append(f"camera lane: {lane['cameras']} file:// cameras at up to 5 detections/s each"
                     f" ({lane['camera_detections_per_s']:.1f}/s measured)")
        lines.append(f"  REST latency p50 / p99 at concurrency 1   {lane['p50']:8.1f} / {lane['p99']:.1f} ms"
                     f"  ({lane['p50'] / rest['p50']:.2f} x without cameras)")
    peer = r["doods2"]
    if peer:
        lines.append("DOODS2, same model file and photo, 2-interpreter pool (measured in this run)")
        lines.append(f"  latency p50 / p99 at concurrency 1         {peer['p50']:8.1f} / {peer['p99']:.1f} ms")
        lines.append("  req/s at concurrency " + " / ".join(str(k) for k in peer["rps"]) + "          "
                     + " / ".join(f"{v:.1f}" for v in peer["rps"].values()))
    else:
        lines.append("DOODS2: not measured (no --doods DIR / $PERCHD_BENCH_DOODS), so no comparison is printed")
    lines.append("targets, ratios from this run")
    lines.append(_target("REST p50 c1 / best raw latency", rest["p50"] / best, "<=", 1.10))
    lines.append(_target(f"REST req/s c{top} / raw {raw['workers']} x 1-thread throughput",
                         rest["rps"][top] / raw["rps_workers"], ">=", 0.90))
    lines.append(_target("daemon RSS with the default detector", rest["rss"], "<=", 200, " MiB"))
    if peer:
        lines.append(_target(f"REST req/s c{top} / DOODS2 req/s c{top}", rest["rps"][top] / peer["rps"][top],
                             ">=", 1.8))
        lines.append(_target("REST p50 c1 / DOODS2 p50 c1", rest["p50"] / peer["p50"], "<=", 1.0))
    lines.append(ANCHORS)
    return lines


def run_models(settings: Settings) -> int:
    """Measure every `auto` candidate now (as the first start does) and print the table and the choice."""
    from .autoselect import AutoChoice, Row, cameras_fps, candidates, format_table, measure_model, pick

    registry = _registry(settings)
    kind, found = "cpu", []
    for kind in registry.candidate_kinds():
        found = candidates(registry, kind)
        if found:
            break
    rows = []
    for model_id, _sha in found:
        entry = registry.manifest.models[model_id]
        assert entry.accuracy is not None
        fps, latency = measure_model(registry, model_id)
        rows.append(Row(model_id, entry.accuracy.coco_map, fps, latency))
        print(f"measured {model_id}", flush=True)
    if not rows:
        print(f"no detection model with a recorded mAP has a file for {kind} in {settings.model_dir}")
        return 1
    fps = cameras_fps(settings)
    best, rule = pick(rows, fps)
    choice = AutoChoice(best.model_id, kind, rule, rows)
    print(f"auto on {kind} ({registry.placement.workers()} workers): {rule}")
    for line in format_table(choice):
        print(line)
    for r in rows:
        accuracy = registry.manifest.models[r.model_id].accuracy
        print(f"  {r.model_id}: COCO mAP from {accuracy.source if accuracy else '?'}")
    return 0
