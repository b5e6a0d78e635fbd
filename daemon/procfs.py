"""Memory figures from Linux's /proc and cgroup files (0 or None where a file is missing: other systems, tests)."""

from __future__ import annotations

import os
from pathlib import Path

MIB = 1024 * 1024


_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / MIB
_own_statm: int | None = None


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process in MiB (Linux /proc; 0 where there is none). Cheap for this process (one
    pread on a kept descriptor): the memory budget reads it around every request."""
    global _own_statm
    try:
        if pid == "self":
            if _own_statm is None:
                _own_statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
            text = os.pread(_own_statm, 128, 0)
        else:
            text = Path(f"/proc/{pid}/statm").read_bytes()
        return int(text.split()[1]) * _PAGE_MB
    except (OSError, ValueError, IndexError):
        return 0.0


def _cgroup_limit_mb() -> float | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text) / MIB
    return None


def ram_mb(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """Physical RAM, or the cgroup memory limit when that is lower."""
    total = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) / 1024
                break
    except OSError:
        pass
    limit = _cgroup_limit_mb()
    candidates = [v for v in (total, limit) if v]
    return min(candidates) if candidates else None


__all__ = ["MIB", "ram_mb", "rss_mb"]
