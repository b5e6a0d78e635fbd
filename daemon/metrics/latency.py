"""Inference-time histogram kept on each loaded model or task; the /metrics collector reads it at scrape time.

Cheaper than a prometheus_client Histogram on the hot path (no label lookup): one bisect and two additions under
an uncontended lock per inference. Workers of one pool record from their own threads, hence the lock.
"""

from __future__ import annotations

import threading
from bisect import bisect_left

# Seconds: from a Coral/NPU detector (~5 ms) to the cartoon GAN on a 2-core board (~2 s).
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0)


class LatencyHistogram:
    __slots__ = ("_counts", "_lock", "_sum")

    def __init__(self) -> None:
        self._counts = [0] * (len(BUCKETS) + 1)  # the last slot counts what lies above the largest bucket
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_ms(self, ms: float) -> None:
        seconds = ms / 1000
        index = bisect_left(BUCKETS, seconds)  # bucket bounds are inclusive ("le")
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """(cumulative [(le, count)] ending with +Inf, sum of seconds), as HistogramMetricFamily takes them."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(repr, BUCKETS), "+Inf"), counts, strict=True):
            running += count
            out.append((bound, running))
        return out, total
