"""The bench's shared-CPU conditions: `--hog` keeps cores busy for as long as a contender runs, and `--cpu-quota`
starts the contender in a cgroup whose quota the server's own CPU budget (models.cpus) reads."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.contention import CGROUP, cpu_quota, hog


def _state_and_cpu_ticks(pid: int) -> tuple[str, int]:
    """A process's state letter and its user + system CPU time in clock ticks, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], int(fields[11]) + int(fields[12])


def test_the_hog_runs_while_the_block_runs_and_stops_after() -> None:
    with hog(2) as pids:
        assert len(pids) == 2
        # Alive, in whatever state a starting interpreter is in (D while it reads its files), then burning CPU.
        # The wait is bounded far above a Python's start-up; nothing here is timed.
        deadline = time.monotonic() + 60
        while True:
            states = [_state_and_cpu_ticks(pid) for pid in pids]
            assert all(state not in "ZX" for state, _ in states), states
            if all(ticks > 0 for _, ticks in states) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert all(ticks > 0 for _, ticks in states), states
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
