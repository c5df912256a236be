"""Whether other processes are busy on this process's CPUs: what /proc/stat says, read over a window."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from embedserve.models.neighbours import CpuTimes, NeighbourMeter, crowded_between, read_cpu_times
from tests.support import until

HZ = os.sysconf("SC_CLK_TCK")


def times(busy: float, idle: float, own: float, at: float) -> CpuTimes:
    return CpuTimes(busy=busy, idle=idle, own=own, at=at)


def test_a_neighbour_on_a_core_the_process_needs_is_a_crowd() -> None:
    # 2 CPUs for 1 s: the process took 1.4, a neighbour 0.6, nothing idle
    assert crowded_between(times(0, 0, 0, 0), times(2.0, 0.0, 1.4, 1.0))


@pytest.mark.parametrize(
    ("busy", "idle", "own", "why"),
    [
        (1.0, 1.0, 0.0, "a neighbour on one core, the other core idle"),
        (2.0, 0.0, 1.9, "the process alone keeps the cores busy"),
        (0.3, 1.7, 0.1, "a quiet machine"),
    ],
)
def test_no_crowd(busy: float, idle: float, own: float, why: str) -> None:
    assert not crowded_between(times(0, 0, 0, 0), times(busy, idle, own, 1.0)), why


def test_no_time_between_two_readings_says_nothing() -> None:
    assert not crowded_between(times(0, 0, 0, 5.0), times(2.0, 0.0, 0.0, 5.0))


def test_proc_stat_is_summed_over_the_processs_cpus_only(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    #        user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text(
        "cpu  999 999 999 999 999 999 999 999 0 0\n"
        f"cpu0 {HZ} 0 {HZ} {2 * HZ} {HZ} 0 0 {HZ} {5 * HZ} 0\n"  # guest time is inside user already
        "cpu1 9999 9999 9999 9999 9999 9999 9999 9999 0 0\n"
        f"cpu2 0 {HZ} 0 {HZ} 0 {HZ} {HZ} 0\n"  # an older kernel: no guest columns
        "intr 12345\n"
    )
    read = read_cpu_times([0, 2], stat)
    assert read is not None
    assert (read.busy, read.idle) == (3.0 + 3.0, 3.0 + 1.0)  # steal counts as a neighbour's; iowait as idle


def test_without_proc_stat_the_cpus_are_never_crowded(tmp_path: Path) -> None:
    assert read_cpu_times([0], tmp_path / "missing") is None
    meter = NeighbourMeter(window=0.0, read=lambda: None)
    assert not meter.crowded()


def test_the_meter_reads_once_a_window() -> None:
    reads = []

    def read() -> CpuTimes:
        reads.append(time.monotonic())
        return times(2.0 * len(reads), 0.0, 1.0 * len(reads), time.monotonic())

    meter = NeighbourMeter(window=3600.0, read=read)
    assert [meter.crowded() for _ in range(100)] == [False] * 100
    assert len(reads) == 1  # the reading at start, still fresh

    reads.clear()
    meter = NeighbourMeter(window=0.0, read=read)  # every call past its window: each reads, and the crowd shows
    assert meter.crowded() and len(reads) == 2


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc/stat")
def test_a_busy_process_on_the_same_core_makes_a_crowd() -> None:
    """A process spinning on the core where a thread of this one spins: over half a second, the meter of that core
    sees the other process take its share and nothing idle."""
    core = min(os.sched_getaffinity(0))
    hog = subprocess.Popen(
        [sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{core}}})\nwhile True: pass"],
    )
    stop = threading.Event()

    def spin() -> None:
        os.sched_setaffinity(0, {core})  # this thread only
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin, daemon=True)
    try:
        spinner.start()
        meter = NeighbourMeter(window=0.5, read=lambda: read_cpu_times([core]))
        until(meter.crowded, "crowded beside a process spinning on the same core", 30, poll=0.05)
    finally:
        stop.set()
        hog.kill()
        hog.wait()
        spinner.join()
