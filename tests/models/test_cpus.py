"""The CPU budget: the process's affinity, capped by its cgroup's CPU quota (v1 or v2, at any level of its path),
rounded up to whole CPUs. Fake cgroup trees stand in for a container's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from embedserve.models.cpus import cgroup_cpu_quota, cpu_budget


def v2_tree(tmp_path: Path, limits: dict[str, str]) -> tuple[Path, Path]:
    """A unified hierarchy with `cpu.max` at each path given; the process in the deepest one."""
    root = tmp_path / "cgroup"
    for path, value in limits.items():
        folder = root / path.strip("/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.max").write_text(value + "\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text(f"0::{max(limits, key=len)}\n")
    return proc, root


def test_v2_quota_is_the_smallest_on_the_path(tmp_path: Path) -> None:
    proc, root = v2_tree(tmp_path, {"/": "max 100000", "/kubepods": "300000 100000", "/kubepods/pod": "150000 100000"})
    assert cgroup_cpu_quota(proc, root) == 1.5


def test_no_quota_set_or_nothing_readable_is_none(tmp_path: Path) -> None:
    proc, root = v2_tree(tmp_path, {"/": "max 100000", "/a": "max 100000"})
    assert cgroup_cpu_quota(proc, root) is None
    assert cgroup_cpu_quota(tmp_path / "missing", root) is None


def test_v1_reads_the_cpu_controllers_cfs_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    folder = root / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("50000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cgroup_cpu_quota(proc, root) == 0.5


@pytest.mark.parametrize(("limit", "budget"), [("150000 100000", 2), ("50000 100000", 1), ("max 100000", None)])
def test_the_budget_rounds_the_quota_up_within_the_affinity(tmp_path: Path, limit: str, budget: int | None) -> None:
    proc, root = v2_tree(tmp_path, {"/pod": limit})
    cpus = len(os.sched_getaffinity(0))
    assert cpu_budget(proc, root) == (min(cpus, budget) if budget is not None else cpus)
    many, root_many = v2_tree(tmp_path / "many", {"/pod": f"{(cpus + 8) * 100000} 100000"})
    assert cpu_budget(many, root_many) == cpus  # a quota above the affinity changes nothing
