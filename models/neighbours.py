"""Whether other processes are busy on the CPUs this process may run on, so that its runners leave no core idle.

A runner whose ONNX Runtime team runs one big forward pass at a time keeps both cores of a quiet machine busy. Beside
another process that keeps a core busy, a member of the team is descheduled at every parallel region and the others
wait for it; a second batch's pass beside the first then uses the time the team waits. Measured on MiniLM (AMD EPYC
VNNI, 2 cores, 32 clients x 1 mixed text, beside one busy process): big passes at once served 101.7-107.6 items/s
against 88.4-95.0 one at a time, where on a quiet machine they cost 7-13% (models.pass_gate).

The measure: over the last WINDOW_SECONDS, the CPU time of the process's CPUs (its affinity, read from /proc/stat)
that neither this process nor the idle loop took. Time the hypervisor stole counts as a neighbour's. It is crowded
when neighbours took at least NEIGHBOUR_CPUS and less than IDLE_CPUS were left idle: a busy neighbour on a machine
with cores to spare leaves the team's cores alone. Where /proc/stat cannot be read (not Linux), never crowded.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import cache
from pathlib import Path

WINDOW_SECONDS = 1.0
NEIGHBOUR_CPUS = 0.25
"""CPUs of neighbours' work, on average over the window, that make a crowd: a busy core is 1.0 (0.55-0.62 of it
beside the server under load, its fair share), a quiet machine's daemons and a load generator ~0.01-0.05."""
IDLE_CPUS = 0.5
"""Idle CPUs over the window below which the team cannot find a free core to run on."""

_USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuTimes:
    """Seconds since boot, summed over some CPUs, and the process's own CPU seconds, read at `at` (monotonic)."""

    busy: float
    idle: float
    own: float
    at: float


def read_cpu_times(cpus: Collection[int], stat: Path = Path("/proc/stat")) -> CpuTimes | None:
    """The busy and idle time of `cpus` from /proc/stat (steal counts as busy: another guest had the core), and this
    process's CPU time; None where /proc/stat cannot be read."""
    busy = idle = 0
    try:
        text = stat.read_text()
    except OSError:
        return None
    wanted = {f"cpu{cpu}" for cpu in cpus}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        # user nice system idle iowait irq softirq steal [guest guest_nice: already inside user and nice]
        fields = [int(value) for value in rest.split()[:8]]
        fields += [0] * (8 - len(fields))
        user, nice, system, idle_, iowait, irq, softirq, steal = fields
        busy += user + nice + system + irq + softirq + steal
        idle += idle_ + iowait
    return CpuTimes(busy / _USER_HZ, idle / _USER_HZ, time.process_time(), time.monotonic())


def crowded_between(before: CpuTimes, after: CpuTimes) -> bool:
    """Whether neighbours took NEIGHBOUR_CPUS or more and less than IDLE_CPUS stayed idle, on average between the
    two readings."""
    seconds = after.at - before.at
    if seconds <= 0:
        return False
    neighbours = (after.busy - before.busy) - (after.own - before.own)
    idle = after.idle - before.idle
    return neighbours / seconds >= NEIGHBOUR_CPUS and idle / seconds < IDLE_CPUS


class NeighbourMeter:
    """`crowded()`, answered from a reading at most `window` seconds old: cheap enough to ask before every pass."""

    def __init__(
        self,
        window: float = WINDOW_SECONDS,
        read: Callable[[], CpuTimes | None] | None = None,
    ) -> None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self._read = read or (lambda: read_cpu_times(cpus))
        self.window = window
        self._lock = threading.Lock()
        self._last = self._read()
        self._crowded = False

    def crowded(self) -> bool:
        last = self._last
        if last is None:
            return False
        if time.monotonic() - last.at < self.window:
            return self._crowded
        with self._lock:
            last = self._last
            if last is not None and time.monotonic() - last.at >= self.window:
                now = self._read()
                if now is not None:
                    self._crowded, self._last = crowded_between(last, now), now
        return self._crowded


@cache
def neighbour_meter() -> NeighbourMeter:
    """The process's one meter, which every CPU session's gate asks."""
    return NeighbourMeter()
