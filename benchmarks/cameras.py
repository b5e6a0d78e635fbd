"""Camera pipeline benchmark: 1, 2 and 4 RTSP cameras (640x480, 15 fps, H.264) through the daemon's own detection
path to a real Mosquitto, measuring

- CPU use of the daemon process (readers + motion gate + detection + MQTT; the RTSP server and the broker are
  separate processes, reported apart) on a still scene and on a moving scene, with the motion gate on, plus the
  still scene with the gate off to show what the gate saves;
- latency from frame capture to a subscriber receiving the `new`/`update` event (p50 / p95), which includes
  waiting for the detector, inference, tracking, snapshot encoding and the broker round trip.

Needs the Debian packages in .ci/apt.d/cameras.txt and the shared models (PERCHD_SHARED, default ../shared).
Run: python benchmarks/cameras.py [--seconds 30] [--cameras 1,2,4] [--json out.json]
Printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from perch.daemon.cameras.runtime import registry_detect, registry_stats, run_cameras  # noqa: E402
from perch.daemon.config import Settings  # noqa: E402
from perch.daemon.core import Core  # noqa: E402

from helpers.mosquitto import Mosquitto  # noqa: E402
from helpers.mqtt_client import Subscriber  # noqa: E402
from helpers.rtsp_server import RtspServer, make_clip  # noqa: E402

SHARED = Path(os.environ.get("PERCHD_SHARED", REPO.parent / "shared")).resolve()
LABELS = ["person", "dog", "cat", "car", "bicycle"]
TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def scenario(
    core: Core, broker: Mosquitto, clip: Path, n: int, seconds: float, motion: bool, warmup: float
) -> dict[str, Any]:
    mounts = {f"/cam{i}": clip for i in range(n)}
    with RtspServer(mounts) as server:
        cameras = [
            {
                "name": f"cam{i}",
                "url": server.url(f"/cam{i}"),
                "detect": {"fps": 5, "labels": LABELS, "min_score": 0.5},
                "motion": {"enabled": motion},
            }
            for i in range(n)
        ]
        cfg = SimpleNamespace(mqtt={"host": "127.0.0.1", "port": broker.port, "stats_interval_s": 5}, cameras=cameras)
        sub = Subscriber(broker.port, topics=("perch/events",), client_id=f"bench-{n}-{motion}").start()
        try:
            async with run_cameras(
                cfg, registry_detect(core.registry), stats_provider=registry_stats(core.registry)
            ) as rt:
                deadline = time.monotonic() + 20
                while not all(c["online"] for c in rt.service.status().values()):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cameras did not come online: {rt.service.status()}")
                    await asyncio.sleep(0.1)
                await asyncio.sleep(warmup)
                n0 = len(sub.snapshot())
                me, srv = os.getpid(), server.proc.pid  # type: ignore[union-attr]
                c0, s0, t0 = proc_cpu_s(me), proc_cpu_s(srv), time.monotonic()
                await asyncio.sleep(seconds)
                c1, s1, t1 = proc_cpu_s(me), proc_cpu_s(srv), time.monotonic()
                status = rt.service.status()
        finally:
            sub.stop()
    latencies = []
    for m in sub.snapshot()[n0:]:
        body = m.json()
        if body["type"] in ("new", "update"):
            latencies.append((m.t - body["after"]["frame_time"]) * 1000)
    wall = t1 - t0
    return {
        "cameras": n,
        "motion_gate": motion,
        "daemon_cpu_pct": round(100 * (c1 - c0) / wall, 1),
        "rtsp_server_cpu_pct": round(100 * (s1 - s0) / wall, 1),
        "camera_fps": round(statistics.mean(c["fps"] for c in status.values()), 1),
        "detect_fps_per_camera": round(statistics.mean(c["detect_fps"] for c in status.values()), 2),
        "events": len(latencies),
        "latency_p50_ms": None if not latencies else round(pct(latencies, 50) or 0, 1),
        "latency_p95_ms": None if not latencies else round(pct(latencies, 95) or 0, 1),
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    counts = [int(x) for x in args.cameras.split(",")]
    with tempfile.TemporaryDirectory(prefix="perch-bench-") as tmp:
        work = Path(tmp)
        images = SHARED / "images"
        still = make_clip(work / "still", images / "kite_and_cold.jpg", kind="still")
        moving = make_clip(work / "moving", images / "pets.jpg", kind="slide", empty_s=1, object_s=2, after_s=1.5)
        settings = Settings(
            model_dir=SHARED / "models",
            state_dir=work / "state",
            cache_dir=work / "cache",
            legacy_port=0,
            cpu={"workers": 2, "threads": 1},
            detection={"model": "ssd_mobilenet_v1"},  # the model of the README's camera table
        )
        core = Core(settings)
        await core.start()
        rows = []
        try:
            with Mosquitto(work) as broker:
                for n in counts:
                    for scene, clip, gate in (
                        ("still", still, True),
                        ("still", still, False),
                        ("moving", moving, True),
                    ):
                        row = await scenario(core, broker, clip, n, args.seconds, gate, args.warmup)
                        row["scene"] = scene
                        rows.append(row)
                        print(_line(row), flush=True)
        finally:
            await core.close()
    return rows


def _line(r: dict[str, Any]) -> str:
    gate = "on " if r["motion_gate"] else "off"
    lat = (
        f"p50 {r['latency_p50_ms']:6.1f} ms  p95 {r['latency_p95_ms']:6.1f} ms ({r['events']} events)"
        if r["events"]
        else "no events"
    )
    return (
        f"{r['cameras']} cam  {r['scene']:<6} gate {gate}  daemon CPU {r['daemon_cpu_pct']:5.1f} % of a core  "
        f"(RTSP server {r['rtsp_server_cpu_pct']:5.1f} %)  {r['camera_fps']:4.1f} fps  "
        f"{r['detect_fps_per_camera']:4.2f} det/s/cam  {lat}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="measuring time per scenario")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds after all cameras are online")
    p.add_argument("--cameras", default="1,2,4")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    print(f"CPU: {_cpu_model()}, {os.cpu_count()} cores")
    rows = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
