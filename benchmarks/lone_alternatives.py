"""How should a lone request use every core? Four scheduler configurations side by side, interleaved in one run.

A: the daemon's default, 1-thread worker interpreters plus an all-core interpreter for a request that arrives alone;
B: 1-thread workers only (the scheduler before, `cpu.lone_threads: 0`); C: one all-core interpreter only;
D: one all-core interpreter per worker (oversubscribed). Four daemons run at once, idle while another is measured;
each figure is taken in blocks that take turns with the others and with the raw in-process pipeline.

Run: python benchmarks/lone_alternatives.py [--model ID] [--seconds S] [--rounds N] (PERCHD_MODEL_DIR as for
`perchd run`). Printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

from perch.daemon.bench_load import Client, Daemon, Raw, multipart_post, pct, run
from perch.daemon.config import load_settings

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PERCHD_SHARED", REPO.parent / "shared")).resolve()
CORES = len(os.sched_getaffinity(0))
VARIANTS = {
    "A all-core lone interpreter + 1-thread workers": {},
    "B 1-thread workers only": {"lone_threads": 0},
    "C one all-core interpreter only": {"workers": 1, "threads": CORES, "lone_threads": 0},
    "D all-core interpreter per worker": {"threads": CORES, "lone_threads": 0},
}


async def measure(model: str, seconds: float, rounds: int) -> None:
    data = (SHARED / "images" / "dog_bicycle_car.jpg").read_bytes()
    base = load_settings(None)
    print(f"{model}, {CORES} cores, load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    raw = Raw(base, model, data)
    daemons = {}
    for name, cpu in VARIANTS.items():
        settings = base.model_copy(update={"cpu": base.cpu.model_copy(update=cpu)})
        daemons[name] = await asyncio.to_thread(Daemon, settings, model)
    clients = {name: Client(multipart_post(d.port, data), 10) for name, d in daemons.items()}
    lat: dict[str, list[float]] = {name: [] for name in clients}
    thr = {(name, level): [0.0, 0.0] for name in clients for level in (2, 8)}
    raw_lat: dict[str, list[float]] = {"one": [], "lone": []}
    raw_thr = [0.0, 0.0]
    block = seconds / rounds
    try:
        for client in clients.values():
            await client.warm()
        for _ in range(rounds):
            raw_lat["one"] += await asyncio.to_thread(raw.latency, raw.sessions[0], block)
            raw_lat["lone"] += await asyncio.to_thread(raw.latency, raw.lone, block)
            n, t = await asyncio.to_thread(raw.throughput, block)
            raw_thr[0] += n
            raw_thr[1] += t
            for name, client in clients.items():
                lat[name] += await client.latency(block)
                for level in (2, 8):
                    n, t = await client.throughput(level, block)
                    thr[(name, level)][0] += n
                    thr[(name, level)][1] += t
    finally:
        for client in clients.values():
            await client.close()
        for daemon in daemons.values():
            daemon.stop()
        raw.close()
    best = min(statistics.median(raw_lat["one"]), statistics.median(raw_lat["lone"]))
    raw_rps = raw_thr[0] / raw_thr[1]
    print(f"raw p50: 1-thread {statistics.median(raw_lat['one']):.1f} ms, all-core "
          f"{statistics.median(raw_lat['lone']):.1f} ms; {CORES} x 1-thread {raw_rps:.1f} img/s")
    print(f"{'':48}{'p50 c1':>8}{'/best':>7}{'p99':>7}{'c2 r/s':>8}{'c8 r/s':>8}{'/raw':>6}")
    for name in clients:
        p50 = statistics.median(lat[name])
        c2 = thr[(name, 2)][0] / thr[(name, 2)][1]
        c8 = thr[(name, 8)][0] / thr[(name, 8)][1]
        print(f"{name:48}{p50:8.1f}{p50 / best:7.2f}{pct(lat[name], 0.99):7.1f}{c2:8.1f}{c8:8.1f}{c8 / raw_rps:6.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ssd_mobilenet_v1")
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per figure")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    run(measure(args.model, args.seconds, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
