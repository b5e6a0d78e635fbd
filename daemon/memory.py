"""The memory budget: how much RAM the daemon may hold, what it holds now, and which task models to unload so that
a new one fits (least recently used first; never the default detector, never one with requests in flight).

Accounting is measured, not guessed: the process's resident set (RSS) now, plus what the model about to load needs
(the RSS growth measured when it last loaded in this process, else the figure recorded in the manifest from a
measurement on a reference machine, `benchmarks/model_memory.py`). After each unload the freed heap is handed back
to the kernel (malloc_trim) and RSS is read again, so fragmentation or a runtime that keeps its libraries loaded
shows up as it is instead of as an optimistic sum.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .loaded import Residency
from .manifest import Manifest
from .procfs import MIB, rss_mb
from .scheduler import WorkerPool

log = logging.getLogger("perch.memory")

# The default budget: this share of the RAM the daemon may use (physical RAM, or the cgroup limit when systemd's
# MemoryMax= or a container sets a lower one), never below the floor. The rest is left to the kernel, page cache,
# camera decoding and whatever else runs on the board.
DEFAULT_SHARE = 0.60
FLOOR_MB = 256
# Loads stop this share short of the budget: room for what requests allocate while they run (decoded uploads,
# activations, the encoded answer) and for what a model keeps after its first real input.
REQUEST_RESERVE = 0.05


class MemoryBudgetExceeded(Exception):
    """A model cannot be loaded within memory.budget_mb even after unloading every idle task model."""


def default_budget_mb(ram: float | None) -> float:
    """60 % of the RAM (see ram_mb), at least 256 MiB; 1024 MiB when the RAM cannot be read."""
    if not ram:
        return 1024.0
    return max(FLOOR_MB, round(ram * DEFAULT_SHARE))


_trim: Callable[[int], int] | None = None
_M_MMAP_THRESHOLD = -3
# Blocks this large or larger get their own mapping, which goes back to the kernel when freed. glibc otherwise
# raises the threshold each time such a block is freed, after which model buffers and image tensors of a few MiB
# land in the heap, fragment it and keep the RSS up after their model is unloaded (measured: the RSS floor after
# loading and unloading every task three times is ~225 MiB with a fixed threshold, ~370 MiB without).
MMAP_THRESHOLD = 4 * MIB


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None


def fix_mmap_threshold() -> None:
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:  # glibc only; musl returns its freed memory by itself
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def give_back_heap() -> None:
    """Return freed heap pages to the kernel (glibc keeps them otherwise, and RSS would not fall after an unload)."""
    global _trim
    if _trim is None:
        _trim = getattr(_libc(), "malloc_trim", None) or (lambda _pad: 0)
    _trim(0)


class Resident(Protocol):
    """A loaded model or task pool as the budget sees it (LoadedModel and LoadedTask both are)."""

    @property
    def key(self) -> str: ...

    pool: WorkerPool
    residency: Residency

    def close(self) -> None: ...

    def pools(self) -> list[WorkerPool]: ...


def in_flight(resident: Resident) -> bool:
    return any(p.depth or any(t is not None for t in p.busy_since) for p in resident.pools())


@dataclass(frozen=True)
class Need:
    """What a load is expected to take, and where that figure comes from (for the log and the refusal)."""

    mb: float
    source: str


def estimate(manifest: Manifest, models: Mapping[str, int]) -> Need | None:
    """Manifest figures for `sessions` Sessions of each model: first + more × (sessions - 1); None if any is missing."""
    total = 0.0
    for model_id, sessions in models.items():
        entry = manifest.models.get(model_id)
        if entry is None or entry.memory is None:
            return None
        total += entry.memory.first_mb + entry.memory.more_mb * max(0, sessions - 1)
    return Need(total, "manifest")


class MemoryBudget:
    def __init__(self, budget_mb: float) -> None:
        fix_mmap_threshold()
        self.budget_mb = budget_mb
        self._lock: asyncio.Lock | None = None
        # Measured RSS growth of each key's last load in this process: the best estimate for its next load.
        self.measured: dict[str, float] = {}
        self.evictions = 0
        self.refusals = 0
        self.loads_started = 0

    def clock(self) -> tuple[int, bool]:
        """(loads started so far, a load or unload under the lock now): see Residency.load_clock."""
        return self.loads_started, self.lock.locked()

    @property
    def lock(self) -> asyncio.Lock:
        """Loads under the budget run one at a time: two loads that each fit could not both fit, and the RSS
        growth of a load is only its own when nothing else loads meanwhile."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def need(self, key: str, fallback: Need | None) -> Need:
        if key in self.measured:
            return Need(self.measured[key], "measured")
        return fallback or Need(0.0, "unknown")

    async def make_room(self, key: str, need: Need, residents: Callable[[], Sequence[Resident]],
                        evictable: Callable[[Resident], bool], evict: Callable[[Resident], Awaitable[None]]) -> None:
        """Unload least recently used idle residents until RSS + need fits; MemoryBudgetExceeded if it never does.
        Call with `lock` held, on the event loop."""
        limit = self.budget_mb * (1 - REQUEST_RESERVE)
        while True:
            now = rss_mb()
            if now + need.mb <= limit:
                return
            idle = [r for r in residents() if r.key != key and evictable(r) and not in_flight(r)]
            if not idle:
                self.refusals += 1
                raise MemoryBudgetExceeded(
                    f"not enough memory for {key}: it needs about {need.mb:.0f} MiB ({need.source}), the daemon"
                    f" holds {now:.0f} MiB and memory.budget_mb is {self.budget_mb:.0f} MiB; nothing idle is left to"
                    " unload (raise memory.budget_mb / PERCHD__MEMORY__BUDGET_MB, or retry when fewer models are busy)")
            victim = min(idle, key=lambda r: r.residency.last_used)
            log.info("unloading %s (%s MiB, least recently used) to make room for %s (%.0f MiB; RSS %.0f of %.0f)",
                     victim.key, _fmt(victim.residency.memory_mb), key, need.mb, now, self.budget_mb)
            self.evictions += 1
            await evict(victim)

    def status(self, residents: Sequence[Resident]) -> dict[str, Any]:
        return {
            "budgetMB": round(self.budget_mb),
            "rssMB": round(rss_mb(), 1),
            "evictions": self.evictions,
            "refusals": self.refusals,
            "models": [{"id": r.key, "memoryMB": None if r.residency.memory_mb is None
                        else round(r.residency.memory_mb, 1)} for r in residents],
        }


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"
