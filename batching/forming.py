"""Choosing which waiting items run together.

Items wait sorted by length. A batch always holds the oldest waiting item (so nothing starves:
an item waits for at most the items older than it) and grows around it through its
neighbours in length order (behind a longer backlog, among the oldest few batches' worth of
items only: the batcher's `arrival_window`), taking whichever neighbour adds the least padding,
while the batch stays within the item and padded-token budgets, and padding either stays a small
share (`min_fill`) or each step adds less of it than another forward pass would cost.
"""

from __future__ import annotations

from collections.abc import Sequence

from embedserve.batching.config import BatchingConfig


def grow_batch(lengths: Sequence[int], anchor: int, config: BatchingConfig, *, padded: bool = True) -> tuple[int, int]:
    """The window [lo, hi) of the length-sorted `lengths` that forms the next batch around `anchor`.

    For a runner that pads, a batch costs its longest item times its items; for one that computes on
    real tokens only (`padded=False`: no built-in runner, which all budget as padded) it costs the items'
    own tokens, and padding is no reason to stop growing."""
    lo, hi = anchor, anchor + 1
    longest, total = lengths[anchor], lengths[anchor]

    def fits(count: int, longest: int, total: int, added_padding: int) -> bool:
        if not padded:
            return count <= config.max_batch_size and total <= config.max_batch_tokens
        padded_tokens = longest * count
        if count > config.max_batch_size or padded_tokens > config.max_batch_tokens:
            return False
        return added_padding <= config.pad_tolerance_tokens or total >= config.min_fill * padded_tokens

    while True:
        count = hi - lo + 1
        left = lengths[lo - 1] if lo > 0 else None
        right = lengths[hi] if hi < len(lengths) else None
        # Padding each would add: the shorter item padded to the longest, or everyone padded to the longer.
        left_pad = longest - left if left is not None else 0
        right_pad = (right - longest) * (count - 1) if right is not None else 0
        left_ok = left is not None and fits(count, longest, total + left, left_pad)
        right_ok = right is not None and fits(count, right, total + right, right_pad)
        if left_ok and right_ok:
            take_left = left_pad <= right_pad
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
