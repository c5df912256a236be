"""What a long run shows while it works: a progress bar with items/s and the time left on a terminal (tqdm), a line
every so many items otherwise (a log, a CI job)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    def __init__(self, total: int, done: int = 0, *, every: int = 10_000, stream: TextIO | None = None) -> None:
        self.total, self.done, self.every = total, done, every
        self._stream = stream or sys.stderr
        self._started, self._start_done = time.monotonic(), done
        self._next_line = done + every
        self._bar: Any = None
        if self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, unit="text", unit_scale=True, file=self._stream, smoothing=0.1)

    def advance(self, items: int) -> None:
        self.done += items
        if self._bar is not None:
            self._bar.update(items)
        elif self.done >= self._next_line or self.done == self.total:
            self._next_line = self.done + self.every
            print(self.line(), file=self._stream, flush=True)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._started

    @property
    def rate(self) -> float:
        """Texts per second embedded since this run started (a resumed run's earlier rows not counted)."""
        seconds = self.seconds
        return (self.done - self._start_done) / seconds if seconds > 0 else 0.0

    def line(self) -> str:
        rate = self.rate
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = f"{left:.0f} s left" if left != float("inf") else "time left unknown"
        return f"embedded {self.done:,} of {self.total:,} texts ({rate:,.1f} texts/s, {eta})"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
