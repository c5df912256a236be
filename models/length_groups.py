"""Splitting a padded batch into forward passes by length, where the padding saved pays for the extra passes.

A runner that pads computes every item at the batch's longest length. The batcher groups items of like length, but
it lets a batch grow while each item adds little padding (`pad_tolerance_tokens`), and a batch of 16 random queries
still carried 1.4x their real tokens. A forward pass of its own costs a fixed overhead instead: on MiniLM's ONNX
graph (AMD EPYC VNNI, 2 threads) ~1.1 ms, what ~10 padded tokens cost. So a runner cuts its length-sorted batch where
that is cheaper in all (`length_groups`) and runs the parts back to back in the same thread: no second dispatch, and
the results are the same rows, as every item is computed alone under its attention mask. Random short batches of 16
and 32 took 0.87-0.94x the time of one pass, mixed ones 0.38-0.56x; served, short 32x1 gained 2-7% and mixed 6-15%
(bench/README.md, "The default engine")."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

RUN_TOKENS = 16
"""A forward pass's fixed cost in padded tokens, rounded up from MiniLM's ~10 (a larger model's tokens cost more
each against a similar overhead): a cut that saves fewer padded tokens than this is not made."""


def length_groups(lengths: Sequence[int], run_tokens: int = RUN_TOKENS) -> list[list[int]]:
    """Indices of `lengths` in groups of neighbouring lengths, shortest first: the split that minimizes padded
    tokens (each group's longest x its size) plus `run_tokens` a group."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    ordered = [lengths[i] for i in order]

    def padded(end: int) -> Iterator[int]:
        longest = ordered[end - 1]
        return (longest * (end - i) + run_tokens for i in range(end))

    return [order[lo:hi] for lo, hi in cheapest_cuts(len(ordered), padded)]


def cheapest_cuts(count: int, group_costs: Callable[[int], Iterable[float]]) -> list[tuple[int, int]]:
    """The split of `count` length-sorted items into groups [lo, hi) of least total cost, first group first, where
    `group_costs(hi)` gives the cost of each group [lo, hi) for lo = 0 .. hi - 1. Exact, by dynamic programming over
    the sorted order (a batch is at most a few hundred items)."""
    best: list[float] = [0] * (count + 1)  # best[j]: the least cost of the first j items
    start = [0] * (count + 1)  # where the last group of that best split starts
    for end in range(1, count + 1):
        best[end], start[end] = min((best[lo] + cost, lo) for lo, cost in enumerate(group_costs(end)))
    cuts: list[tuple[int, int]] = []
    end = count
    while end > 0:
        cuts.append((start[end], end))
        end = start[end]
    return cuts[::-1]


def run_in_groups(
    arrays: dict[str, np.ndarray],
    forward: Callable[[dict[str, np.ndarray]], np.ndarray],
    *,
    per_token: bool,
    run_tokens: int = RUN_TOKENS,
) -> np.ndarray:
    """`forward` over a right-padded batch (`arrays`: input_ids, attention_mask, ... of [items, length]), run in the
    parts `length_groups` splits it into, each cut to its own longest. The output's rows are in the batch's order; a
    `per_token` output ([items, length, ...]) is zero past each part's length, where the mask is 0 anyway."""
    lengths = arrays["attention_mask"].sum(axis=1)
    groups = length_groups(lengths.tolist(), run_tokens)
    if len(groups) == 1:
        return forward(arrays)
    out: np.ndarray | None = None
    for group in groups:
        width = int(lengths[group].max())
        part = forward({name: array[group, :width] for name, array in arrays.items()})
        if out is None:
            rows = (len(lengths), arrays["attention_mask"].shape[1]) if per_token else (len(lengths),)
            out = np.zeros((*rows, *part.shape[len(rows) :]), dtype=part.dtype)
        if per_token:
            out[group, :width] = part
        else:
            out[group] = part
    assert out is not None
    return out
