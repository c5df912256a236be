"""CPU and memory readings from Linux /proc, so the bench needs no psutil.

The machine may be shared (someone's test suite running beside the bench), so besides the server's
own CPU the bench reads machine-wide busy time to tell how much of the cores something else took.
"""

from __future__ import annotations

import math
import os
import resource
import time
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """User+system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of a process (all its threads); None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def process_tree(pid: int) -> list[int]:
    """`pid` and every live descendant (by parent pid): a server may run its model in child processes."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_bytes().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(current := todo.pop())
        todo += children.get(current, [])
    return tree


def tree_cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of a process and its live descendants; None when the process is gone."""
    if (own := process_cpu_seconds(pid)) is None:
        return None
    return own + sum(process_cpu_seconds(child) or 0.0 for child in process_tree(pid)[1:])


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot: user, nice, system, irq, softirq (not idle, iowait, steal)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / _CLK_TCK


def status_kb(pid: int, key: str) -> int | None:
    """A kB figure from /proc/PID/status, e.g. VmRSS (resident now) or VmHWM (peak resident)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def wait_quiet(max_cores: float, max_wait: float, interval: float = 1.0) -> float:
    """Block until the machine's busy CPU over `interval` is below `max_cores`, for at most `max_wait` seconds.

    Returns the last busy reading in cores, so a caller can note when it gave up waiting.
    """
    busy = 0.0
    for _ in range(max(1, math.ceil(max_wait / interval))):
        before = machine_busy_seconds()
        time.sleep(interval)
        busy = (machine_busy_seconds() - before) / interval
        if busy < max_cores:
            break
    return busy
