"""The batcher's sense of time: when items arrived, and a timer for "wait at most until then".

Injectable so that tests decide when time passes (a clock they advance by hand) instead of
sleeping and asserting on how long a machine took.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Calls `callback` on the event loop once `time()` reaches `when`."""
        ...


class LoopClock:
    """The running event loop's monotonic clock and its timers: the default."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_at(when, callback)
