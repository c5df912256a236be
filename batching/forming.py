"""Choosing which waiting items run together.

Items wait sorted by length. A batch always holds the oldest waiting item (so nothing starves:
an item waits for at most the items older than it) and grows around it through its
neighbours in length order, taking whichever neighbour adds the least padding, while the
batch stays within the item and padded-token budgets and padding stays a small share.
"""

from __future__ import annotations

from typing import Sequence

from batching.config import BatchingConfig


def grow_batch(lengths: Sequence[int], anchor: int, config: BatchingConfig) -> tuple[int, int]:
    """The window [lo, hi) of the length-sorted `lengths` that forms the next batch around `anchor`."""
    lo, hi = anchor, anchor + 1
    longest, total = lengths[anchor], lengths[anchor]

    def fits(count: int, longest: int, total: int) -> bool:
        padded = longest * count
        if count > config.max_batch_size or padded > config.max_batch_tokens:
            return False
        return padded <= config.small_batch_tokens or total >= config.min_fill * padded

    while True:
        count = hi - lo + 1
        left = lengths[lo - 1] if lo > 0 else None
        right = lengths[hi] if hi < len(lengths) else None
        left_ok = left is not None and fits(count, longest, total + left)
        right_ok = right is not None and fits(count, right, total + right)
        if left_ok and right_ok:
            # Padding each would add: the shorter item padded to the longest, or everyone padded to the longer.
            take_left = longest - left <= (right - longest) * (count - 1)  # type: ignore[operator]
        elif left_ok or right_ok:
            take_left = left_ok
        else:
            return lo, hi
        if take_left:
            lo -= 1
            total += left  # type: ignore[operator]
        else:
            hi += 1
            total += right  # type: ignore[operator]
            longest = right  # type: ignore[assignment]
