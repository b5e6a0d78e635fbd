"""The last 10 minutes in 10-second buckets, for the dashboard's charts: HTTP requests/s and inference latency.

Cheap on the hot path: a request costs one integer increment (in the shared middleware); inference costs nothing,
because a sampler reads the counters and the recent job times the worker pools keep anyway, once per bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from typing import Any

BUCKET_S = 10.0
BUCKETS = 60  # 10 minutes


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of a small sample; None when it is empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return round(ordered[rank], 2)


def _pools(registry: Any) -> list[Any]:
    """Every worker pool of the registry: detection models and the other tasks (faces, OCR, …)."""
    return [m.pool for m in list(registry.loaded.values())] + [t.pool for t in list(registry.tasks.values())]


class History:
    """A ring of closed buckets plus the open one. `requests` and `errors` are bumped by the HTTP middleware."""

    def __init__(self, bucket_s: float = BUCKET_S, buckets: int = BUCKETS) -> None:
        self.bucket_s = bucket_s
        self.requests = 0
        self.errors = 0
        self._ring: deque[dict[str, Any]] = deque(maxlen=buckets)
        self._opened = time.time()
        self._seen_requests = 0
        self._seen_errors = 0
        # Jobs each pool had finished at the last sample; weak, so an unloaded model's pool is forgotten.
        self._seen_jobs: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def count(self, status: int) -> None:
        """One finished HTTP request (called by the middleware for every listener)."""
        self.requests += 1
        if status >= 500:
            self.errors += 1

    def _jobs_since_sample(self, registry: Any, commit: bool) -> list[float]:
        """Job times (ms) of the jobs every pool finished since the last sample."""
        times: list[float] = []
        for pool in _pools(registry):
            stats = pool.stats
            done = stats.processed + stats.failed
            new = done - self._seen_jobs.get(pool, 0)
            if new > 0:
                # recent_ms is a bounded deque appended to by the worker threads: copy it in one C call.
                recent = list(stats.recent_ms)
                times.extend(recent[-min(new, len(recent)):])
            if commit:
                self._seen_jobs[pool] = done
        return times

    def _bucket(self, start: float, end: float, registry: Any, commit: bool) -> dict[str, Any]:
        span = max(end - start, 1e-3)
        requests = self.requests - self._seen_requests
        errors = self.errors - self._seen_errors
        times = self._jobs_since_sample(registry, commit) if registry is not None else []
        if commit:
            self._seen_requests += requests
            self._seen_errors += errors
        return {
            "t": round(start, 3),
            "seconds": round(span, 2),
            "requests": requests,
            "errors": errors,
            "rps": round(requests / span, 3),
            "inferences": len(times),
            "inferencePerSecond": round(len(times) / span, 3),
            "p50Ms": percentile(times, 0.5),
            "p95Ms": percentile(times, 0.95),
        }

    def sample(self, registry: Any, now: float | None = None) -> None:
        """Close the open bucket (called every `bucket_s` by the sampler task)."""
        now = time.time() if now is None else now
        self._ring.append(self._bucket(self._opened, now, registry, commit=True))
        self._opened = now

    def snapshot(self, registry: Any) -> dict[str, Any]:
        """The closed buckets, oldest first, and the open one so far (reading changes nothing)."""
        return {
            "bucketSeconds": self.bucket_s,
            "buckets": list(self._ring),
            "current": self._bucket(self._opened, time.time(), registry, commit=False),
        }

    async def run(self, registry: Any) -> None:
        """Sample every `bucket_s` until cancelled; a late wake-up closes a longer bucket rather than losing one."""
        while True:
            await asyncio.sleep(max(0.0, self._opened + self.bucket_s - time.time()))
            self.sample(registry)


def model_latency(registry: Any) -> dict[str, dict[str, Any]]:
    """Per loaded model or task: inference ms p50/p95 over its recent runs and the jobs it has served."""
    out: dict[str, dict[str, Any]] = {}
    holders = list(registry.loaded.items()) + list(registry.tasks.items())
    for model_id, holder in holders:
        recent = list(holder.inference_ms)[-200:]
        snap = holder.pool.snapshot()
        out[model_id] = {
            "p50Ms": percentile(recent, 0.5),
            "p95Ms": percentile(recent, 0.95),
            "samples": len(recent),
            "served": snap.get("processed", 0),
        }
    return out


@contextlib.asynccontextmanager
async def sampling(history: History, registry: Any) -> Any:
    task = asyncio.create_task(history.run(registry), name="perch-history")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
