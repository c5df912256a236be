"""Which forward passes of one session run at the same time.

An ONNX Runtime session keeps one team of intra-op threads. A small pass (a batch of short queries) leaves the team
idle for much of its serial stretches, so a second small pass on its own calling thread fills the idle core. A big
pass keeps the whole team busy, and a second one beside it only makes the team wait for a member that is off running
the other. Measured on MiniLM (AMD EPYC VNNI, 2 cores, 32 clients x 1 text, bench/README.md "Two small passes at
once"): two whole batches at once served short 9-16% more items/s than one but mixed 7-13% fewer; with small passes
together and a big one alone, short gained 8-11% and mixed 5-24%. So a pass of at most `small` padded tokens may run
beside another small one, and a bigger one runs alone, unless other processes are busy on the same cores
(models.neighbours): then the team waits for its descheduled member anyway, and a second big pass fills that wait."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SMALL_PASS_TOKENS = 512
"""Padded tokens (items x longest) up to which a pass may share the session's threads with another: a batch of 16
to 32 short queries is 200-500 (bench/README.md, "Two small passes at once")."""


class PassGate:
    def __init__(self, small: int = SMALL_PASS_TOKENS, crowded: Callable[[], bool] = lambda: False) -> None:
        self.small = small
        self.crowded = crowded
        """Whether neighbours are busy on this process's CPUs now: then every pass may run beside another."""
        self._changed = threading.Condition()
        self._running = 0
        self._big_running = False
        self._big_waiting = 0
        self.waiting = 0
        """Threads held at the gate now."""

    @contextmanager
    def passing(self, padded_tokens: int) -> Iterator[None]:
        """Holds this thread until its pass of `padded_tokens` may run, and for as long as it runs. A big pass (on
        CPUs without busy neighbours) waits for every running pass to end, and small ones that come after it wait
        for it, so it never starves."""
        big = padded_tokens > self.small and not self.crowded()
        with self._changed:
            self.waiting += 1
            if big:
                self._big_waiting += 1
                self._changed.wait_for(lambda: self._running == 0)
                self._big_waiting -= 1
                self._big_running = True
            else:
                self._changed.wait_for(lambda: not self._big_running and not self._big_waiting)
            self.waiting -= 1
            self._running += 1
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                if big:
                    self._big_running = False
                self._changed.notify_all()
