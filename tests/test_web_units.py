"""Small parts of the dashboard's server side: the 10-minute history ring, the recent-events ring, the live view's
one-slot viewer, and the static files the page is made of."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace
from typing import Any

from perch.daemon.cameras.recent import RecentEvents
from perch.daemon.scheduler import PoolStats
from perch.daemon.web.history import BUCKETS, History, model_latency, percentile
from perch.daemon.web.live import Viewer
from perch.daemon.web.pages import FILES


class FakePool:
    def __init__(self) -> None:
        self.stats = PoolStats()

    def run(self, *times_ms: float, failed: bool = False) -> None:
        for ms in times_ms:
            self.stats.recent_ms.append(ms)
            if failed:
                self.stats.failed += 1
            else:
                self.stats.processed += 1

    def snapshot(self) -> dict[str, Any]:
        return {"processed": self.stats.processed}


def registry(**pools: FakePool) -> Any:
    return SimpleNamespace(loaded={k: SimpleNamespace(pool=p, inference_ms=[]) for k, p in pools.items()}, tasks={})


def test_percentile() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([float(i) for i in range(1, 101)], 0.5) in (50.0, 51.0)
    assert percentile([float(i) for i in range(1, 101)], 0.95) in (95.0, 96.0)


def test_buckets_count_requests_and_only_new_jobs() -> None:
    pool = FakePool()
    reg = registry(ssd=pool)
    history = History()
    pool.run(10, 20, 30)
    for status in (200, 200, 503):
        history.count(status)
    history.sample(reg, now=history._opened + 10)
    first = history.snapshot(reg)["buckets"][-1]
    assert (first["requests"], first["errors"], first["inferences"]) == (3, 1, 3)
    assert first["rps"] == 0.3 and first["p50Ms"] == 20 and first["p95Ms"] == 30
    pool.run(100, failed=True)
    # Reading the open bucket changes nothing; closing it counts the one new job only.
    assert history.snapshot(reg)["current"]["inferences"] == 1
    assert history.snapshot(reg)["current"]["inferences"] == 1
    history.sample(reg, now=history._opened + 10)
    second = history.snapshot(reg)["buckets"][-1]
    assert (second["requests"], second["inferences"], second["p50Ms"]) == (0, 1, 100)


def test_more_jobs_than_the_pool_remembers_and_a_replaced_pool() -> None:
    pool = FakePool()
    history = History()
    pool.run(*[1.0] * 300)  # recent_ms keeps the last 200 times
    history.sample(registry(ssd=pool))
    assert history.snapshot(None)["buckets"][-1]["inferences"] == 200
    fresh = FakePool()  # the model was reloaded: a new pool starts from zero
    fresh.run(7.0)
    history.sample(registry(ssd=fresh))
    assert history.snapshot(None)["buckets"][-1]["p50Ms"] == 7.0


def test_ring_keeps_ten_minutes() -> None:
    history = History()
    for _ in range(BUCKETS + 5):
        history.sample(registry(), now=history._opened + 10)
    buckets = history.snapshot(registry())["buckets"]
    assert len(buckets) == BUCKETS
    assert buckets[-1]["t"] - buckets[0]["t"] == (BUCKETS - 1) * 10


def test_model_latency_percentiles() -> None:
    pool = FakePool()
    pool.run(1, 2, 3)
    reg = registry(ssd=pool)
    reg.loaded["ssd"].inference_ms = [10.0, 12.0, 30.0]
    assert model_latency(reg) == {"ssd": {"p50Ms": 12.0, "p95Ms": 30.0, "samples": 3, "served": 3}}


def _after(event_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": event_id, "camera": "porch", "label": "person", "score": 0.6, "top_score": 0.7,
            "start_time": float(event_id), "end_time": None, "stationary": False, **extra}


def test_recent_events_are_bounded_and_updated_in_place() -> None:
    ring = RecentEvents(capacity=3)
    for i in range(1, 5):
        ring.record("new", _after(str(i)), b"jpeg%d" % i)
    listed = ring.list()
    assert [e["id"] for e in listed] == ["4", "3", "2"]  # newest first, the oldest dropped
    ring.record("end", _after("3", end_time=9.0, top_score=0.9), None)
    entry = ring.snapshot("3")
    assert entry is not None and entry.end_time == 9.0 and entry.top_score == 0.9 and entry.snapshot == b"jpeg3"
    assert [e["id"] for e in ring.list(limit=1)] == ["4"]
    assert ring.list(camera="garage") == []
    assert ring.snapshot("1") is None
    small = RecentEvents(capacity=10, max_bytes=10)
    for i in range(1, 4):
        small.record("new", _after(str(i)), b"12345")
    assert [e["id"] for e in small.list()] == ["3", "2"]  # a byte cap as well as a count


async def test_viewer_keeps_only_the_newest_frame() -> None:
    viewer = Viewer()
    for n in range(5):
        viewer.offer(b"frame%d" % n)
    assert await viewer.next(1.0) == b"frame4" and viewer.skipped == 4
    assert await viewer.next(0.01) is None  # nothing new
    viewer.offer(b"late")
    viewer.close()
    assert await viewer.next(1.0) is None


async def test_viewer_wakes_for_a_frame() -> None:
    viewer = Viewer()
    waiting = asyncio.create_task(viewer.next(30.0))
    await asyncio.sleep(0)
    viewer.offer(b"frame")
    assert await waiting == b"frame"


def test_page_loads_only_its_own_files() -> None:
    html = FILES["index.html"][0].decode()
    # Every file the page or its scripts refer to is one the daemon serves, and none is on another host.
    referenced = set(re.findall(r'(?:src|href)="/ui/([^"]+)"', html))
    for name, (body, ctype) in FILES.items():
        if name.endswith(".js"):
            assert ctype == "text/javascript"
            referenced |= set(re.findall(r'from "\./([^"]+)"', body.decode()))
            # The SVG namespace is a name, not an address the browser fetches.
            text = body.decode().replace("http://www.w3.org/2000/svg", "")
            assert "http://" not in text and "https://" not in text, name
    assert referenced and referenced <= set(FILES)
    assert "//" not in re.sub(r"<!--.*?-->", "", html).replace("http://www.w3.org", "")
