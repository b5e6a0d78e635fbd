"""Overload: 200 clients that retry at once, against a real daemon with a small queue (4 deep, 1 worker, 2 s timeout).

Every request is answered within queue.timeout_s + 1 s, either with a result or with its dialect's busy answer (503
with Retry-After; CodeProject semantics: HTTP 200 with code 503); the health check stays fast during the storm; and
the next requests after it succeed at the rate they did before.

"Fast" is measured against the machine's own noise, side by side: a do-nothing HTTP server in its own process is
probed at the same time, and the daemon's ping p99 may exceed the issue's 100 ms only by that server's p99.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from perch.daemon.bench_load import pct as percentile

from conftest import IMAGES, MODELS
from helpers.daemon import Daemon
from helpers.load import ControlServer, Kind, Prober, kinds, run_clients, small_jpeg

CLIENTS = 200
STORM_S = 5.0
QUEUE_TIMEOUT_S = 2.0
PING_P99_MS = 100.0
STORM_KINDS = ("detection", "deepstack", "ultralytics", "roboflow", "raypack")


async def _rate(ports: dict[str, int], kind: Kind, seconds: float) -> float:
    """Successful requests per second from two clients sending back to back."""
    results = await run_clients(ports, [kind, kind], seconds, timeout=30)
    assert all(r.answer is not None and kind.ok(r.answer) for r in results), [r.error or r.answer for r in results]
    return len(results) / seconds


async def test_200_clients_every_request_answered_ping_stays_fast(tmp_path: Path) -> None:
    catalogue = kinds(small_jpeg(IMAGES / "dog_bicycle_car.jpg"), small_jpeg(IMAGES / "face.jpg"))
    storm = [catalogue[STORM_KINDS[i % len(STORM_KINDS)]] for i in range(CLIENTS)]
    config = {"queue": {"max_depth": 4, "timeout_s": QUEUE_TIMEOUT_S}, "cpu": {"workers": 1}}
    with Daemon(tmp_path, MODELS, legacy_port=True, config=config) as daemon, ControlServer() as control:
        ports = {"main": daemon.port, "legacy": daemon.legacy_port}
        for name in STORM_KINDS:  # each dialect answers when the box is not busy
            (warm,) = await run_clients(ports, [catalogue[name]], 0.001, timeout=30)
            assert warm.answer is not None and catalogue[name].ok(warm.answer), (name, warm.error or warm.answer)
        before = await _rate(ports, catalogue["detection"], 2.0)

        probe, noise = Prober(daemon.port, STORM_S), Prober(control.port, STORM_S)
        results = await run_clients(ports, storm, STORM_S, timeout=QUEUE_TIMEOUT_S + 30)
        pings, control_pings = probe.result(), noise.result()

        first_after = time.monotonic()
        after = await _rate(ports, catalogue["detection"], 2.0)
        recovered_in = time.monotonic() - first_after

    # Every request was answered: a result, or its dialect's busy answer; nothing else, and no hang.
    errors = [r.error for r in results if r.error]
    assert not errors, errors[:5]
    outcome = Counter()
    for r in results:
        kind = catalogue[r.kind]
        assert r.answer is not None
        verdict = "ok" if kind.ok(r.answer) else "busy" if kind.busy(r.answer) else "other"
        outcome[r.kind, verdict] += 1
        assert verdict != "other", (r.kind, r.answer.status, r.answer.headers, r.answer.body[:300])
    slowest = max(r.seconds for r in results)
    assert slowest < QUEUE_TIMEOUT_S + 1, f"a request took {slowest:.2f} s"
    for name in STORM_KINDS:  # each dialect refused in its own shape; the box kept working meanwhile
        assert outcome[name, "busy"] > 0, outcome
    assert sum(n for (_, verdict), n in outcome.items() if verdict == "ok") > 0, outcome

    # The health check stayed up and fast.
    assert None not in pings, f"{pings.count(None)} health checks failed"
    noise_p99 = percentile([p for p in control_pings if p is not None], 0.99)
    ping_p99 = percentile([p for p in pings if p is not None], 0.99)
    print(f"\noverload: {len(results)} answers in {STORM_S:g} s from {CLIENTS} clients {dict(outcome)}; slowest "
          f"{slowest:.2f} s; ping p50 {percentile(pings, 0.5):.1f} ms p99 {ping_p99:.1f} ms (control server p99 "
          f"{noise_p99:.1f} ms); detection {before:.1f} req/s before, {after:.1f} req/s after")
    assert ping_p99 < PING_P99_MS + noise_p99, (ping_p99, noise_p99)

    # Throughput recovered at once: the first 2 s after the storm ran at the rate of the 2 s before it.
    assert recovered_in < 2.0 + QUEUE_TIMEOUT_S
    assert after >= 0.5 * before, (before, after)
