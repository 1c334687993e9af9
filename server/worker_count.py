"""How many worker processes `fleetwire serve --workers N|auto` runs.

`auto` means the CPUs this process may really use: a container's CPU limit is a cgroup
quota (Kubernetes writes `limits.cpu` there), which `os.cpu_count()` does not see; without
a quota, the CPUs the process is pinned to. Pure functions decide; `cgroup_cpu_limit`
is the one that reads files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
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


def worker_count(requested: int | None, quota: float | None, usable_cpus: int) -> int:
    """The processes to run: `requested`, or for `auto` (None) the CPU quota rounded up,
    never more than the CPUs the process may run on, at least 1."""
    if requested is not None:
        return requested
    cpus = max(1, usable_cpus)
    if quota is not None and quota > 0:
        cpus = min(cpus, math.ceil(quota))
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


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup (v2, else v1) and its parents, or None."""
    lines = (_read(proc_cgroup) or "").splitlines()
    quotas: list[float | None] = []
    for line in lines:
        _hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controllers == "":  # v2: "0::/path"
            for directory in _ancestors(path):
                text = _read(root / directory.lstrip("/") / "cpu.max")
                quotas.append(quota_v2(text) if text is not None else None)
        elif "cpu" in controllers.split(","):  # v1: "4:cpu,cpuacct:/path"
            mount = next((root / name for name in (controllers, "cpu", "cpu,cpuacct") if (root / name).is_dir()), None)
            if mount is None:
                continue
            for directory in _ancestors(path):
                base = mount / directory.lstrip("/")
                quota, period = _read(base / "cpu.cfs_quota_us"), _read(base / "cpu.cfs_period_us")
                quotas.append(quota_v1(quota, period) if quota is not None and period is not None else None)
    return _lowest(quotas)


def usable_cpus() -> int:
    """The CPUs this process may be scheduled on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def workers_from_environment(requested: int | None) -> int:
    """`worker_count` for this process, reading its cgroup and affinity."""
    return worker_count(requested, cgroup_cpu_limit() if requested is None else None, usable_cpus())
