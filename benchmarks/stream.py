"""What the live annotated stream (GET /cameras/<name>/stream.mjpeg) costs the camera lane.

One daemon (in this process: Core + the main app with its camera lifecycle, on a loopback port) watches one RTSP
camera (640x480, 15 fps H.264, a person sliding through the frame so detection runs all the time; the RTSP server
is a separate process). Side by side in one run, with 0, 1 and 4 live viewers (curl processes reading the stream,
so their CPU is not the daemon's), it measures

- daemon CPU (% of one core: readers, motion gate, detection, drawing + JPEG encoding for the stream),
- the camera lane: detections per second and the time of each camera detection call (queue + inference),
- the stream: frames encoded per second for all viewers together, and the time of one draw + encode,

and prints each figure as a ratio to the run without viewers. Printed, never asserted.

Needs the Debian packages in .ci/apt.d/cameras.txt and curl, and the shared models (PERCHD_SHARED).
Run: python benchmarks/stream.py [--seconds 20] [--viewers 0,1,4] [--fps 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from perch.daemon.api.common import CODEPROJECT, CORE  # noqa: E402
from perch.daemon.app import _cameras_lifecycle, create_app  # noqa: E402
from perch.daemon.config import Settings  # noqa: E402
from perch.daemon.core import Core  # noqa: E402
from perch.daemon.web.camera_routes import LIVE  # noqa: E402

from helpers.rtsp_server import RtspServer, free_port, make_clip  # noqa: E402

SHARED = Path(os.environ.get("PERCHD_SHARED", REPO.parent / "shared")).resolve()
TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def pct(values: list[float], q: int) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def measure(app: web.Application, port: int, viewers: int, seconds: float, warmup: float) -> dict[str, Any]:
    core = app[CORE]
    worker = core.cameras.service.worker("cam")
    calls: list[float] = []
    detect = worker.detect

    async def timed(frame: Any) -> Any:
        started = time.perf_counter()
        try:
            return await detect(frame)
        finally:
            calls.append((time.perf_counter() - started) * 1000)

    worker.detect = timed
    old = app[LIVE].views.get("cam")
    while old is not None and old.viewers:  # the previous scenario's viewers hang up first
        await asyncio.sleep(0.1)
    url = f"http://127.0.0.1:{port}/cameras/cam/stream.mjpeg"
    clients = [subprocess.Popen(["curl", "-sN", "-o", "/dev/null", url]) for _ in range(viewers)]
    try:
        await asyncio.sleep(warmup)
        view = app[LIVE].views.get("cam")
        e0, ms0 = (view.encoded, view.encode_ms) if view else (0, 0.0)
        calls.clear()
        c0, t0 = proc_cpu_s(os.getpid()), time.monotonic()
        await asyncio.sleep(seconds)
        c1, t1 = proc_cpu_s(os.getpid()), time.monotonic()
        e1, ms1 = (view.encoded, view.encode_ms) if view else (0, 0.0)
        live = len(view.viewers) if view else 0
    finally:
        for c in clients:
            c.terminate()
            c.wait(10)
        worker.detect = detect
    wall = t1 - t0
    return {
        "viewers": viewers,
        "connected": live,
        "daemon_cpu_pct": 100 * (c1 - c0) / wall,
        "detections_per_s": len(calls) / wall,
        "detect_p50_ms": pct(calls, 50),
        "detect_p95_ms": pct(calls, 95),
        "encoded_per_s": (e1 - e0) / wall,
        "encode_ms": (ms1 - ms0) / (e1 - e0) if e1 > e0 else None,
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="perch-stream-") as tmp:
        work = Path(tmp)
        clip = make_clip(work / "moving", SHARED / "images" / "squat.bmp", kind="slide", empty_s=0, object_s=4,
                         after_s=0)
        with RtspServer({"/cam": clip}) as camera:
            settings = Settings(model_dir=SHARED / "models", state_dir=work / "state", cache_dir=work / "cache",
                                legacy_port=0, cpu={"workers": 2, "threads": 1},
                                cameras=[{"name": "cam", "url": camera.url("/cam"),
                                          "detect": {"fps": 5, "labels": ["person"], "min_score": 0.5}}],
                                web={"stream_fps": args.fps})
            core = Core(settings)
            await core.start()
            app = create_app(core, CODEPROJECT)
            app.cleanup_ctx.append(_cameras_lifecycle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            rows = []
            try:
                deadline = time.monotonic() + 30
                while not core.cameras.service.status()["cam"]["online"]:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the camera did not come online")
                    await asyncio.sleep(0.1)
                for n in [int(x) for x in args.viewers.split(",")]:
                    rows.append(await measure(app, port, n, args.seconds, args.warmup))
                    print(_line(rows[-1], rows[0]), flush=True)
            finally:
                await runner.cleanup()
                await core.close()
    return rows


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:4.2f}x" if value is not None and base else "  – "


def _fmt(value: float | None, unit: str = "") -> str:
    return "–" if value is None else f"{value:.1f}{unit}"


def _line(r: dict[str, Any], base: dict[str, Any]) -> str:
    return (f"{r['viewers']} viewers ({r['connected']} connected): daemon CPU {_fmt(r['daemon_cpu_pct'], ' %')}"
            f" ({_ratio(r['daemon_cpu_pct'], base['daemon_cpu_pct'])})  camera lane {r['detections_per_s']:.2f}"
            f" det/s ({_ratio(r['detections_per_s'], base['detections_per_s'])}), p50"
            f" {_fmt(r['detect_p50_ms'], ' ms')} ({_ratio(r['detect_p50_ms'], base['detect_p50_ms'])}), p95"
            f" {_fmt(r['detect_p95_ms'], ' ms')} ({_ratio(r['detect_p95_ms'], base['detect_p95_ms'])})  stream"
            f" {r['encoded_per_s']:.1f} frames/s encoded, {_fmt(r['encode_ms'], ' ms')} each")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="measuring time per scenario")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds after the viewers connect")
    p.add_argument("--viewers", default="0,1,4")
    p.add_argument("--fps", type=float, default=10.0, help="web.stream_fps")
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    print(f"{os.cpu_count()} cores; stream at {args.fps:g} fps; {args.seconds:g} s per scenario")
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
