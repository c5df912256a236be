"""How many CPUs this process may use: the one home of that number, for every runner's thread count.

`os.cpu_count()` and torch's default count the machine's cores; a container under a CPU limit (Kubernetes'
`resources.limits.cpu`, `docker run --cpus`) gets only a quota of their time, enforced by the cgroup's CFS
bandwidth control. Threads past the quota are throttled, and an OpenMP or ONNX Runtime team waits at every
parallel region for a member that was throttled. So the budget is the CPUs this process may run on (its
affinity) capped by its cgroup's quota, rounded up: under 1.5 CPUs of 2 cores, two threads kept the whole quota
busy (MiniLM, 32 clients, ONNX fp32: short 323 items/s, mixed 78) where one thread left half a CPU unused (278, 59;
bench/README.md, "A shared CPU").
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_budget(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT) -> int:
    """The CPUs this process may keep busy: its affinity's count, capped by its cgroup's CPU quota."""
    return budget_under(cgroup_cpu_quota(proc_cgroup, root))


def budget_under(quota: float | None) -> int:
    """The CPUs this process may keep busy under `quota` (CPUs, or None for none): for a caller that has read it."""
    cpus = len(os.sched_getaffinity(0))
    return max(1, min(cpus, math.ceil(quota))) if quota is not None else cpus


def cgroup_cpu_quota(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup and its ancestors, in CPUs (quota / period, the smallest on the
    path); None where none is set or none can be read. cgroup v2 (`cpu.max`) and v1 (`cpu.cfs_quota_us`)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    found: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy
            found += _quotas(root, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            for mount in (root / controllers, root / "cpu", root / "cpu,cpuacct"):
                if mount.is_dir():
                    found += _quotas(mount, path, _v1_quota)
                    break
    return min(found) if found else None


def _quotas(mount: Path, path: str, read: object) -> list[float]:
    """Each quota set on the way from the mount's root down to the process's cgroup."""
    quotas = []
    parts = [part for part in path.strip("/").split("/") if part]
    for depth in range(len(parts) + 1):
        quota = read(mount.joinpath(*parts[:depth]))  # type: ignore[operator]
        if quota is not None:
            quotas.append(quota)
    return quotas


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period
