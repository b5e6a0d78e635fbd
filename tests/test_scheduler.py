"""Worker pools: results come back on the loop, a full queue answers at once, a slow job times out, no hangs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from perch.accelerators.base import TensorSpec
from perch.daemon.scheduler import LANE_CAMERA, LANE_REQUEST, QueueFull, QueueTimeout, WorkerPool


class GateSession:
    """A stand-in at the vendor seam: run() blocks until the test opens the gate."""

    kind = "cpu"
    device = "cpu"
    inputs: Sequence[TensorSpec] = ()
    outputs: Sequence[TensorSpec] = ()

    def __init__(self) -> None:
        self.gate = threading.Event()

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.gate.wait(10)
        return [np.asarray(inputs[0]) * 2]

    def close(self) -> None:
        self.gate.set()


async def test_results_and_errors_reach_the_caller() -> None:
    session = GateSession()
    session.gate.set()
    pool = WorkerPool("t", [session], max_depth=4, timeout_s=5)
    try:
        out = await pool.submit(lambda s: s.run([np.array([21])])[0])
        assert out.tolist() == [42]

        def boom(_: object) -> None:
            raise ValueError("bad tensor")

        with pytest.raises(ValueError, match="bad tensor"):
            await pool.submit(boom)
        assert (await pool.submit(lambda s: 7)) == 7, "a failing job does not kill the worker"
        assert pool.stats.processed == 2 and pool.stats.failed == 1
    finally:
        pool.close()


async def test_full_queue_is_refused_at_once_and_wait_times_out() -> None:
    session = GateSession()
    pool = WorkerPool("t", [session], max_depth=2, timeout_s=0.5)
    try:
        running = asyncio.create_task(pool.submit(lambda s: s.run([np.array([1])])))
        await asyncio.sleep(0.1)  # the worker is now blocked inside run()
        assert pool.stuck_for() > 0
        queued = [asyncio.create_task(pool.submit(lambda s: 1)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await pool.submit(lambda s: 1)
        with pytest.raises(QueueTimeout):
            await running
        for task in queued:
            with pytest.raises(QueueTimeout):
                await task
        session.gate.set()
        assert (await pool.submit(lambda s: "alive", timeout_s=5)) == "alive"
        assert pool.stats.rejected == 1
    finally:
        pool.close()


async def test_camera_lane_is_not_starved() -> None:
    session = GateSession()
    pool = WorkerPool("t", [session], max_depth=100, timeout_s=10)
    order: list[str] = []
    try:
        blocker = asyncio.create_task(pool.submit(lambda s: s.run([np.array([0])])))
        await asyncio.sleep(0.05)
        jobs = [asyncio.create_task(pool.submit(lambda s, i=i: order.append(f"r{i}"), LANE_REQUEST))
                for i in range(8)]
        jobs.append(asyncio.create_task(pool.submit(lambda s: order.append("cam"), LANE_CAMERA)))
        await asyncio.sleep(0.05)
        session.gate.set()
        await asyncio.gather(blocker, *jobs)
        assert "cam" in order[:5], order
    finally:
        pool.close()


async def test_one_warm_worker_serves_sequential_requests() -> None:
    """At low load the most recently idle worker takes the next job instead of the workers taking turns."""
    sessions = [GateSession(), GateSession(), GateSession()]
    for s in sessions:
        s.gate.set()
    pool = WorkerPool("t", sessions, max_depth=4, timeout_s=5)
    try:
        # Let every thread start and park first: a worker that starts late would rightly take over the stack top.
        for _ in range(200):
            if len(pool._idle) == len(sessions):
                break
            await asyncio.sleep(0.01)
        used = [await pool.submit(lambda s: id(s)) for _ in range(10)]
        await asyncio.sleep(0)
        assert len(set(used[1:])) == 1, used
    finally:
        pool.close()


async def test_a_lone_job_runs_on_the_all_core_session_and_concurrent_ones_on_their_workers() -> None:
    """Latency-adaptive: nothing queued or running -> the lone Session; under load -> each worker's own."""
    workers, lone = [GateSession(), GateSession()], GateSession()
    for s in [*workers, lone]:
        s.gate.set()
    pool = WorkerPool("t", list(workers), max_depth=8, timeout_s=5, lone=lone)
    try:
        # One request at a time (a camera server waiting for each answer), in either lane: always the lone one.
        used = [await pool.submit(lambda s: s, lane) for lane in (LANE_REQUEST, LANE_CAMERA, LANE_REQUEST)]
        assert all(s is lone for s in used)
        # A job that starts while another runs gets a worker's 1-thread Session, never the busy lone one.
        lone.gate.clear()
        first = asyncio.create_task(pool.submit(lambda s: (s, s.run([np.array([1])]))[0]))
        await asyncio.sleep(0.05)
        second = await pool.submit(lambda s: s)
        assert second in workers
        lone.gate.set()
        assert (await first) is lone
        # A burst: the jobs that find others queued or running use the workers' Sessions.
        burst = await asyncio.gather(*(pool.submit(lambda s: s) for _ in range(8)))
        assert any(s in workers for s in burst)
        assert pool.snapshot()["processedAlone"] == pool.stats.lone >= 4
        lone.gate.clear()
    finally:
        pool.close()
    assert lone.gate.is_set(), "closing the pool closes the lone Session too"


async def test_without_a_lone_session_nothing_changes() -> None:
    session = GateSession()
    session.gate.set()
    pool = WorkerPool("t", [session], max_depth=4, timeout_s=5)
    try:
        assert (await pool.submit(lambda s: s)) is session
        assert pool.snapshot()["processedAlone"] == 0
    finally:
        pool.close()
