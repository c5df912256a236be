"""A padded batch split into forward passes by length: the split that costs least, and the same rows back."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from embedserve.models.length_groups import RUN_TOKENS, length_groups, run_in_groups


def cost(lengths: list[int], groups: list[list[int]], run_tokens: int) -> int:
    return sum(max(lengths[i] for i in group) * len(group) + run_tokens for group in groups)


def every_split(lengths: list[int]) -> list[list[list[int]]]:
    """Every split of the length-sorted order into contiguous groups (what a brute force compares)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    splits = []
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        groups, current = [], [order[0]]
        for index, cut in zip(order[1:], cuts):
            if cut:
                groups.append(current)
                current = []
            current.append(index)
        splits.append([*groups, current])
    return splits


@pytest.mark.parametrize("seed", range(20))
def test_the_split_costs_no_more_than_any_other_and_covers_every_item_once(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(3, 12), rng.randint(40, 120)]) for _ in range(rng.randint(1, 9))]
    run_tokens = rng.choice([0, 4, RUN_TOKENS, 64])
    groups = length_groups(lengths, run_tokens)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    best = min(cost(lengths, split, run_tokens) for split in every_split(lengths))
    assert cost(lengths, groups, run_tokens) == best


def test_like_lengths_run_as_one_pass_and_far_apart_ones_as_two() -> None:
    assert length_groups([10, 11, 12, 10] * 4) == [sorted(range(16), key=lambda i: ([10, 11, 12, 10] * 4)[i])]
    short, long = [8] * 8, [200] * 2
    groups = length_groups(short + long)
    assert [sorted(group) for group in groups] == [list(range(8)), [8, 9]]
    # Padding eight items by 2 tokens saves 16 - less than a pass costs with a larger overhead: one pass.
    assert len(length_groups([8] * 8 + [10], run_tokens=17)) == 1


def padded(lengths: list[int]) -> dict[str, np.ndarray]:
    width = max(lengths)
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = np.arange(1, length + 1) * (row + 1)
        mask[row, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_the_rows_come_back_in_the_batchs_order_as_one_pass_gives_them() -> None:
    lengths = [5, 90, 6, 88, 4, 7]
    arrays = padded(lengths)
    calls: list[tuple[int, int]] = []

    def per_token(part: dict[str, np.ndarray]) -> np.ndarray:  # a "hidden state" of each position
        calls.append(part["input_ids"].shape)
        return np.stack([part["input_ids"] * 0.5, part["attention_mask"] * 1.0], axis=-1)

    def per_row(part: dict[str, np.ndarray]) -> np.ndarray:  # a "logit" of each row
        return (part["input_ids"] * part["attention_mask"]).sum(axis=1, keepdims=True) * 1.0

    whole = per_token(arrays)
    calls.clear()
    grouped = run_in_groups(arrays, per_token, per_token=True)
    assert sorted(calls) == [(2, 90), (4, 7)], "two passes, each cut to its own longest"
    assert grouped.shape == whole.shape
    mask = arrays["attention_mask"].astype(bool)
    np.testing.assert_array_equal(grouped[mask], whole[mask])
    assert not grouped[~mask].any(), "past an item's length: zeros, where the mask is 0 anyway"
    np.testing.assert_array_equal(run_in_groups(arrays, per_row, per_token=False), per_row(arrays))
