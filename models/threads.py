"""Sharing the CPU's intra-op threads among the batches of one model that run at once.

One batch alone gets every thread: a single client's latency is that of a plain forward pass. Once
batches have overlapped, each takes its share (threads / batches seen at once) for as long as they
keep overlapping (CROWDED_SECONDS after the last overlap), so under load the OpenMP teams together
ask for no more threads than there are cores; a batch already running cannot shrink its team, so
halving only the newcomer would still oversubscribe. Oversubscribed teams stall at every parallel
region waiting for a descheduled member; on 2 cores, two single-thread batches served `mixed` load
15-20% faster than one two-thread batch at a time, while a lone request on one thread was ~4 ms
slower.

Torch and ONNX runners on CPU run two batches at once unless told otherwise (CPU_WORKERS, with its
measurements); the cost is a second batch's activations in memory. ONNX Runtime's team cannot be
resized per batch: the second batch runs on its own calling thread beside the first's team
(`onnx_runner._OnnxRunner.cpu`).

torch keeps the OpenMP and MKL thread counts per thread once a thread has run a parallel op, so
each worker sets its own before each batch (only when it changes: the call is cheap, not free).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

CROWDED_SECONDS = 1.0

CPU_WORKERS = 2
"""Batches at once on a CPU where the operator set none, each on its share of the intra-op threads:
one batch's Python (packing, pooling) and the event loop's work overlap the other's forward. Measured
A B A B (AMD EPYC, 2 cores, MiniLM, 32 clients x 1 text): short +14-28%, mixed +12-21% items/s against
one, peak RSS +10 / +65 MB. ONNX runners run two as well, with only their small forward passes at once
(models.pass_gate has its figures), and one under a CPU quota below their threads (onnx_runner._OnnxRunner.cpu)."""


class ThreadShare:
    def __init__(self, threads: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.threads = max(1, threads)
        self._clock = clock
        self._running = 0
        self._crowd = 1
        """The most batches seen at once, until `_crowded_until`."""
        self._crowded_until = 0.0
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def batches(self) -> int:
        """How many batches these threads serve at once where the operator set none: CPU_WORKERS, but
        never more than one per thread."""
        return min(CPU_WORKERS, self.threads)

    def _share(self) -> int:
        """Counts a starting batch in; its thread count. Call under the lock."""
        self._running += 1
        now = self._clock()
        if now > self._crowded_until:
            self._crowd = 1
        if self._running > 1:
            self._crowd = max(self._crowd, self._running)
            self._crowded_until = now + CROWDED_SECONDS
        return max(1, self.threads // max(self._running, self._crowd))

    @contextmanager
    def batch(self) -> Iterator[int]:
        """Runs one batch on this thread with its share of the threads (yielded)."""
        import torch

        with self._lock:
            share = self._share()
        if getattr(self._local, "threads", None) != share:
            torch.set_num_threads(share)
            self._local.threads = share
        try:
            yield share
        finally:
            with self._lock:
                self._running -= 1


class _NoShare:
    """Accelerators: threads are not what a batch competes for."""

    batches = 1

    def batch(self) -> AbstractContextManager[Any]:
        return nullcontext()


def cpu_thread_share(device: Any) -> ThreadShare | _NoShare:
    """A ThreadShare of torch's current intra-op thread count on the CPU; nothing elsewhere."""
    import torch

    return ThreadShare(torch.get_num_threads()) if device.type == "cpu" else _NoShare()
