"""Measure what each model costs in memory, for the `memory:` figures in models/manifest.yaml.

For every task and detection model, a fresh daemon-like process loads the default detector first (as the daemon
does), then the task with 1 and, in another fresh process, 2 workers, and records the RSS growth of opening and
warming each model's Sessions (the task's own code opens them, with its own options and warm-up). A model's
`first_mb` is the growth with one Session (its runtime's start-up included, when the default detector has not
already paid for it), `more_mb` what each further Session adds.

Run: python benchmarks/model_memory.py [--json] (PERCHD_SHARED or ../shared for the models). Prints YAML lines to
paste into the manifest; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PERCHD_SHARED", REPO.parent / "shared")).resolve()
MAX_PX = 50_000_000
DETECTORS = ("ssd_mobilenet_v1", "yolox_nano", "yolov8n")
TASKS = ("faces", "alpr", "scene", "segmentation", "superresolution", "cartoon:cartoon_gan",
         "cartoon:cartoon_gan_int8", "sound", "text")


async def _task(registry: Any, key: str) -> None:
    from perch.daemon.vision import classify, enhance, faces, ocr, segment, sound, text

    getters = {
        "faces": lambda: faces.get_face_task(registry, MAX_PX),
        "alpr": lambda: ocr.get_plate_reader(registry, MAX_PX),
        "scene": lambda: classify.get_scene_task(registry, MAX_PX),
        "segmentation": lambda: segment.get_segment_task(registry, MAX_PX),
        "superresolution": lambda: enhance.get_superres_task(registry, MAX_PX),
        "sound": lambda: sound.get_sound_task(registry),
        "text": lambda: text.get_text_task(registry),
    }
    if key.startswith("cartoon:"):
        await enhance.get_cartoon_task(registry, key.split(":", 1)[1], MAX_PX)
    else:
        await getters[key]()


def child(key: str, workers: int) -> dict[str, float]:
    """In a fresh process: RSS growth per model id while `key` loads with `workers` workers."""
    from perch.accelerators.probe import probe
    from perch.daemon.config import Settings
    from perch.daemon.manifest import load_manifest
    from perch.daemon.memory import rss_mb
    from perch.daemon.registry import ModelRegistry

    tmp = Path(tempfile.mkdtemp(prefix="perch-mem-"))
    settings = Settings(model_dir=SHARED / "models", state_dir=tmp, cache_dir=tmp,
                        cpu={"workers": workers, "lone_threads": 0}, memory={"budget_mb": 100_000})
    registry = ModelRegistry(settings, load_manifest(), probe(Path("/")))
    grown: dict[str, float] = {}
    if key != "ssd_mobilenet_v1":
        registry.placement.load_detector("ssd_mobilenet_v1")  # what the daemon always has loaded first
    if key in DETECTORS:
        before = rss_mb()
        registry.placement.load_detector(key)
        return {key: rss_mb() - before}
    opener = registry.placement.open_sessions

    def measured(model_id: str, count: int, *args: Any, **kwargs: Any) -> Any:
        before = rss_mb()
        try:
            return opener(model_id, count, *args, **kwargs)
        finally:
            grown[model_id] = grown.get(model_id, 0.0) + rss_mb() - before

    registry.placement.open_sessions = measured  # type: ignore[method-assign]
    before = rss_mb()
    asyncio.run(_task(registry, key))
    total = rss_mb() - before
    if not grown:  # no Sessions (the text task's lexicons): the whole load belongs to its first model
        grown = {"vader": total}
    return grown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("KEY", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return 0
    figures: dict[str, dict[str, float]] = {}
    for key in (*DETECTORS, *TASKS):
        runs = []
        for workers in (1, 2):
            out = subprocess.run([sys.executable, __file__, "--child", key, str(workers)], capture_output=True,
                                 text=True, timeout=300, check=True).stdout.strip().splitlines()[-1]
            runs.append(json.loads(out))
        for model_id, one in runs[0].items():
            two = runs[1].get(model_id, one)
            figures[model_id] = {"first_mb": round(one, 1), "more_mb": round(max(0.0, two - one), 1)}
            print(f"{key:<26}{model_id:<26}first {one:7.1f} MiB   each more {max(0.0, two - one):6.1f} MiB",
                  file=sys.stderr)
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        for model_id, f in figures.items():
            print(f"  {model_id}: memory: {{first_mb: {f['first_mb']}, more_mb: {f['more_mb']}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
