"""A shared CPU, as contenders meet it in production: beside a noisy neighbour (`--hog N`: N processes that keep
a core busy each) or under a CPU quota (`--cpu-quota 1.5`: the server in a cgroup with CFS bandwidth control, as
Kubernetes' `resources.limits.cpu` or `docker run --cpus` sets it)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


@contextlib.contextmanager
def hog(processes: int) -> Iterator[list[int]]:
    """`processes` busy loops (one core each, at normal priority) for as long as the block runs; their pids."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def cpu_quota(cpus: float | None, name: str) -> Iterator[list[str]]:
    """An argv prefix that starts a command inside a new cgroup limited to `cpus` CPUs (nothing where None); the
    cgroup is removed after the block. Needs a writable cgroup v1 `cpu` controller or cgroup v2 with `cpu` enabled."""
    if cpus is None:
        yield []
        return
    folder = _make_cgroup(name, cpus)
    try:
        yield ["sh", "-c", f'echo $$ > {folder / "cgroup.procs"} && exec "$@"', "sh"]
    finally:
        with contextlib.suppress(OSError):
            for pid in (folder / "cgroup.procs").read_text().split():  # what outlived the server
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
        with contextlib.suppress(OSError):
            folder.rmdir()


def _make_cgroup(name: str, cpus: float) -> Path:
    quota = int(cpus * PERIOD_US)
    v1 = CGROUP / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        folder = v1 / name
        _mkdir(folder)
        (folder / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (folder / "cpu.cfs_quota_us").write_text(str(quota))
        return folder
    if (CGROUP / "cgroup.controllers").exists() and "cpu" in (CGROUP / "cgroup.subtree_control").read_text().split():
        folder = CGROUP / name
        _mkdir(folder)
        (folder / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        return folder
    raise RuntimeError("--cpu-quota needs a writable cgroup cpu controller (v1 /sys/fs/cgroup/cpu, or v2 with +cpu)")


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise RuntimeError(f"--cpu-quota cannot make the cgroup {folder}: {exc}") from exc
