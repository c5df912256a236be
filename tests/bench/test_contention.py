"""The bench's shared-CPU conditions: `--hog` keeps cores busy for as long as a contender runs, and `--cpu-quota`
starts the contender in a cgroup whose quota the server's own CPU budget (models.cpus) reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.contention import CGROUP, cpu_quota, hog


def test_the_hog_runs_while_the_block_runs_and_stops_after() -> None:
    with hog(2) as pids:
        assert len(pids) == 2
        for pid in pids:
            assert Path(f"/proc/{pid}/stat").read_text().split()[2] in "RS"  # alive (running or runnable)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_a_command_under_the_quota_sees_it_as_its_cpu_budget() -> None:
    if not os.access(CGROUP / "cpu", os.W_OK) and not os.access(CGROUP, os.W_OK):
        pytest.skip("no writable cgroup here (the bench's --cpu-quota says so when asked)")
    name = f"embedserve-test-{os.getpid()}"
    script = "from embedserve.models.cpus import cgroup_cpu_quota, cpu_budget; print(cgroup_cpu_quota(), cpu_budget())"
    with cpu_quota(1.5, name) as prefix:
        done = subprocess.run([*prefix, sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1.5", str(min(2, len(os.sched_getaffinity(0))))]
    assert not (CGROUP / "cpu" / name).exists() and not (CGROUP / name).exists()  # removed after
    with cpu_quota(None, name) as prefix:
        assert prefix == []
