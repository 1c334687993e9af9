"""How many worker processes `fleetwire serve --workers N|auto` runs.

`auto` means the CPUs this process may really use: a container's CPU limit is a cgroup
quota (Kubernetes writes `limits.cpu` there), which `os.cpu_count()` does not see; without
a quota, the CPUs the process is pinned to. And no more workers than the memory limit
holds: each worker is a whole interpreter (about 48 MB at rest, `WORKER_BYTES` with
headroom), and a pod with only a memory limit on a large node would otherwise start one per
node CPU and be killed for its memory before its first vehicle. Pure functions decide;
`cgroup_cpu_limit` and `cgroup_memory_limit` read the files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from fleetwire.strictjson import ConfigError

AUTO = "auto"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def parse_workers(text: str) -> int | None:
    """`--workers` as given: a positive count, or None for `auto`."""
    if text.strip().lower() == AUTO:
        return None
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError("--workers", f"expected a positive number of processes or 'auto', not {text!r}")
    return count


SUPERVISOR_BYTES = 64 * 2**20
"""The supervisor and multiprocessing's resource tracker, at rest (47 + 12 MB measured)."""
WORKER_BYTES = 64 * 2**20
"""One worker at rest (48 MB measured), before its connections (about 30 KB each)."""


def memory_cap(limit_bytes: float) -> int:
    """The most workers a memory limit holds, their fixed cost taking at most half of it
    (the rest is for connections and queues): 256Mi → 1, 512Mi → 3, 1Gi → 7."""
    return max(1, int((limit_bytes / 2 - SUPERVISOR_BYTES) // WORKER_BYTES))


def worker_count(requested: int | None, quota: float | None, usable_cpus: int,
                 memory_limit: float | None = None) -> int:
    """The processes to run: `requested`, or for `auto` (None) the CPU quota rounded up,
    never more than the CPUs the process may run on nor than `memory_cap` allows, at least 1."""
    if requested is not None:
        return requested
    cpus = max(1, usable_cpus)
    if quota is not None and quota > 0:
        cpus = min(cpus, math.ceil(quota))
    if memory_limit is not None and memory_limit > 0:
        cpus = min(cpus, memory_cap(memory_limit))
    return max(1, cpus)


def quota_v2(cpu_max: str) -> float | None:
    """CPUs allowed by a cgroup v2 `cpu.max` ("200000 100000" = 2; "max 100000" = no limit)."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def quota_v1(cfs_quota_us: str, cfs_period_us: str) -> float | None:
    """CPUs allowed by cgroup v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1 = no limit)."""
    try:
        quota, period = int(cfs_quota_us), int(cfs_period_us)
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _ancestors(path: str) -> list[str]:
    """`/a/b` → ["/a/b", "/a", "/"]: a quota set on a parent cgroup limits its children too."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[:n]) for n in range(len(parts), -1, -1)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _lowest(quotas: Iterable[float | None]) -> float | None:
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _cgroup_dirs(root: Path, proc_cgroup: Path, v1_controller: str) -> Iterator[tuple[int, Path]]:
    """(cgroup version, directory) of this process's cgroup and each parent: a limit set on
    a parent limits its children too."""
    for line in (_read(proc_cgroup) or "").splitlines():
        _hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controllers == "":  # v2: "0::/path"
            for directory in _ancestors(path):
                yield 2, root / directory.lstrip("/")
        elif v1_controller in controllers.split(","):  # v1: "4:cpu,cpuacct:/path"
            names = (controllers, v1_controller, f"{v1_controller},cpuacct")
            mount = next((root / name for name in names if (root / name).is_dir()), None)
            if mount is not None:
                for directory in _ancestors(path):
                    yield 1, mount / directory.lstrip("/")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup (v2, else v1) and its parents, or None."""
    quotas: list[float | None] = []
    for version, base in _cgroup_dirs(root, proc_cgroup, "cpu"):
        if version == 2:
            text = _read(base / "cpu.max")
            quotas.append(quota_v2(text) if text is not None else None)
        else:
            quota, period = _read(base / "cpu.cfs_quota_us"), _read(base / "cpu.cfs_period_us")
            quotas.append(quota_v1(quota, period) if quota is not None and period is not None else None)
    return _lowest(quotas)


def memory_bytes(text: str) -> float | None:
    """A cgroup memory limit: v2's `memory.max` ("max" = none) or v1's `memory.limit_in_bytes`
    (a number near 2**63 = none)."""
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return float(value) if 0 < value < 2**60 else None


def cgroup_memory_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The memory limit of this process's cgroup (v2, else v1) and its parents, or None."""
    limits: list[float | None] = []
    for version, base in _cgroup_dirs(root, proc_cgroup, "memory"):
        text = _read(base / ("memory.max" if version == 2 else "memory.limit_in_bytes"))
        limits.append(memory_bytes(text) if text is not None else None)
    return _lowest(limits)


def usable_cpus() -> int:
    """The CPUs this process may be scheduled on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def workers_from_environment(requested: int | None) -> int:
    """`worker_count` for this process, reading its cgroup and affinity."""
    if requested is not None:
        return requested
    return worker_count(None, cgroup_cpu_limit(), usable_cpus(), cgroup_memory_limit())
