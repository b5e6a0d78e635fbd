"""Soak: 20,000 mixed requests at concurrency 4 against a real daemon, every dialect and task mixed in.

No request may fail; between request 2,000 (every model loaded, caches warm) and the end the daemon's RSS may grow
by less than 5 %, its open file descriptors stay where they were, and its threads grow at most by the size of
asyncio's default thread pool (which starts its threads on demand). PERCHD_SOAK_REQUESTS changes the
count; PERCHD_SOAK_MINUTES=N runs for N minutes instead (the long variant, for people with time).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import IMAGES, MODELS
from helpers.daemon import Daemon
from helpers.load import Connection, Kind, Result, kinds, multipart, one, small_jpeg

pytestmark = pytest.mark.reliability

CONCURRENCY = 4
BASELINE_AT = 2000
MAX_RSS_GROWTH = 0.05
# Weights of the mix: mostly what cameras and NVRs send, some of everything else.
MIX = {"detection": 22, "deepstack": 8, "ultralytics": 8, "roboflow": 8, "raypack": 6, "face": 22, "scene": 22,
       "recognize": 3, "register": 1}


def _faces(face: bytes) -> dict[str, Kind]:
    ok = kinds(b"", b"")["detection"].ok
    return {
        "recognize": Kind("recognize", "/v1/vision/face/recognize", *multipart({"image": face}), ok, lambda a: False),
        # The same person over and over: a write to the face database every time (descriptors averaged).
        "register": Kind("register", "/v1/vision/face/register", *multipart({"image": face}, {"userid": "soak"}),
                         ok, lambda a: False),
    }


async def test_soak_mixed_requests_memory_and_descriptors_flat(tmp_path: Path) -> None:
    minutes = float(os.environ.get("PERCHD_SOAK_MINUTES", "0") or 0)
    total = int(os.environ.get("PERCHD_SOAK_REQUESTS", "20000"))
    face = small_jpeg(IMAGES / "grace_hopper.bmp", 320)
    catalogue = {**kinds(small_jpeg(IMAGES / "dog_bicycle_car.jpg"), face), **_faces(face)}
    rng = random.Random(13)
    names = list(MIX)
    weights = [MIX[n] for n in names]

    samples: list[tuple[int, float, dict[str, int]]] = []
    results: list[Result] = []
    with Daemon(tmp_path, MODELS, legacy_port=True) as daemon:
        ports = {"main": daemon.port, "legacy": daemon.legacy_port}
        started = time.monotonic()
        deadline = started + minutes * 60 if minutes else None
        sample_every = max(BASELINE_AT, total // 10) if not minutes else None
        next_sample = time.monotonic() + 30

        def more() -> bool:
            return time.monotonic() < deadline if deadline else len(results) < total

        def sample() -> None:
            samples.append((len(results), time.monotonic() - started, daemon.proc_status()))

        # Each client keeps one keep-alive connection per listener, open until the last sample: the descriptors
        # counted at request 2,000 and at the end are the same connections.
        conns = [{p: Connection(p) for p in ports.values()} for _ in range(CONCURRENCY)]

        async def client(mine: dict[int, Connection]) -> None:
            nonlocal next_sample
            while more():
                kind = catalogue[rng.choices(names, weights)[0]]
                results.append(await one(mine[ports["legacy" if kind.legacy else "main"]], kind, timeout=60))
                n = len(results)
                if n == BASELINE_AT or (sample_every and n % sample_every == 0) or (
                        deadline and time.monotonic() >= next_sample):
                    next_sample = time.monotonic() + 30
                    sample()

        try:
            await asyncio.gather(*(client(c) for c in conns))
            await asyncio.sleep(1.0)  # let the last answers' buffers go
            sample()
        finally:
            for mine in conns:
                for c in mine.values():
                    c.close()
        elapsed = time.monotonic() - started
        log_tail = daemon.log_text()[-2000:]

    failed = [(r.kind, r.error or (r.answer.status, r.answer.body[:200]) if r.answer else r.error) for r in results
              if r.error or r.answer is None or not catalogue[r.kind].ok(r.answer)]
    base = next(s for s in samples if s[0] >= BASELINE_AT)
    end = samples[-1]
    growth = (end[2]["rss_kib"] - base[2]["rss_kib"]) / base[2]["rss_kib"]
    print(f"\nsoak: {len(results)} requests in {elapsed:.0f} s ({len(results) / elapsed:.1f} req/s, concurrency "
          f"{CONCURRENCY}); {dict(Counter(r.kind for r in results))}; failures {len(failed)}")
    for n, t, st in samples:
        print(f"  after {n:>6} requests ({t:5.0f} s): RSS {st['rss_kib'] / 1024:.1f} MiB, {st['fds']} fds, "
              f"{st['threads']} threads")
    print(f"  RSS growth from request {base[0]} to the end: {growth * 100:+.2f} %")
    by_kind: dict[str, list[float]] = {}
    for r in results:
        by_kind.setdefault(r.kind, []).append(r.seconds * 1000)
    print("  mean ms: " + ", ".join(f"{k} {sum(v) / len(v):.0f}" for k, v in sorted(by_kind.items())))
    assert not failed, (failed[:5], log_tail)
    assert len(results) >= (1 if minutes else total)
    assert growth < MAX_RSS_GROWTH, f"RSS grew {growth * 100:.1f} % after request {base[0]}"
    assert end[2]["fds"] <= base[2]["fds"], (base, end)
    # asyncio's default executor (asyncio.to_thread) starts its threads on demand, up to min(32, cores + 4), and
    # may still be filling up after the baseline; beyond that, a thread more is a leak.
    pool = min(32, (os.cpu_count() or 1) + 4)
    assert end[2]["threads"] <= base[2]["threads"] + pool, (base, end)
