"""How the next batch is chosen from the waiting items (`grow_batch`).

The waiting items are sorted by length; the batch is a window [lo, hi) of that order that
always holds the oldest item (the anchor) and grows through its neighbours in length while it
stays within the item and padded-token budgets, and each step either keeps at least `min_fill`
of the padded tokens real or adds at most `pad_tolerance_tokens` of padding.
"""

from __future__ import annotations

import random

import pytest

from embedserve.batching.config import BatchingConfig
from embedserve.batching.forming import grow_batch


def config(**overrides: float) -> BatchingConfig:
    return BatchingConfig(**overrides)


def padded(window: list[int]) -> int:
    return max(window) * len(window)


def form_all(arrivals: list[int], cfg: BatchingConfig) -> list[list[int]]:
    """Forms batches from items of these lengths (in arrival order) the way the batcher does:
    each batch is grown around the oldest item still waiting. Returns each batch's arrival indices."""
    waiting = sorted(range(len(arrivals)), key=lambda i: (arrivals[i], i))  # by (length, arrival)
    batches = []
    while waiting:
        anchor = waiting.index(min(waiting))
        lo, hi = grow_batch([arrivals[i] for i in waiting], anchor, cfg)
        batches.append(waiting[lo:hi])
        del waiting[lo:hi]
    return batches


# -- the oldest item ----------------------------------------------------------------------


def test_a_lone_item_is_a_batch_of_one() -> None:
    assert grow_batch([7], 0, config()) == (0, 1)


@pytest.mark.parametrize("anchor", [0, 5, 11])
def test_the_window_always_holds_the_anchor(anchor: int) -> None:
    lengths = [1, 1, 2, 3, 50, 51, 52, 400, 800, 900, 2000, 5000]
    lo, hi = grow_batch(lengths, anchor, config(max_batch_tokens=4096))
    assert lo <= anchor < hi


# -- padding stays small ------------------------------------------------------------------


def test_many_short_and_a_few_long_items_split_into_a_short_and_a_long_batch() -> None:
    # The oldest item is short; long items are scattered through the arrivals.
    arrivals = [10] * 16 + [1000] * 4
    random.Random(3).shuffle(arrivals)
    arrivals.insert(0, 10)
    batches = form_all(arrivals, config())
    lengths = [sorted(arrivals[i] for i in batch) for batch in batches]
    assert lengths == [[10] * 17, [1000] * 4]
    # versus 21 x 1000 = 21000 padded tokens for one batch of everything
    assert sum(padded(b) for b in lengths) == 170 + 4000


def test_with_room_for_one_more_the_neighbour_adding_less_padding_joins() -> None:
    two = config(max_batch_size=2, pad_tolerance_tokens=0, min_fill=0)
    # 50 with 52 pads 2 tokens; 50 with 10 pads 40.
    assert grow_batch([10, 50, 52], 1, two) == (1, 3)
    # 50 with 48 pads 2 tokens; 50 with 90 pads 40.
    assert grow_batch([48, 50, 90], 1, two) == (0, 2)


def test_a_longer_neighbour_costs_padding_for_every_item_already_in_the_batch() -> None:
    # Batch [100, 100, 100]: a 90 on the left pads 10 tokens, a 104 on the right pads 3 x 4 = 12.
    cfg = config(max_batch_size=4, pad_tolerance_tokens=0, min_fill=0)
    assert grow_batch([90, 100, 100, 100, 104], 2, cfg) == (0, 4)
    # ... while a 102 pads only 3 x 2 = 6 and is preferred.
    assert grow_batch([90, 100, 100, 100, 102], 2, cfg) == (1, 5)


def test_items_much_longer_than_the_batch_are_left_out_when_padding_would_dominate() -> None:
    cfg = config(pad_tolerance_tokens=0, min_fill=0.5)
    # [20, 20, 20] + 100 would be 400 padded tokens for 160 real ones.
    assert grow_batch([20, 20, 20, 100], 0, cfg) == (0, 3)
    # ... but 20 + 30 is 60 padded for 50 real: fine.
    assert grow_batch([20, 20, 20, 30], 0, cfg) == (0, 4)


def test_padding_is_bounded_by_min_fill_plus_the_per_step_tolerance() -> None:
    # Every step keeps min_fill real or adds at most pad_tolerance_tokens of padding, so a batch
    # of n items carries at most (1 - min_fill) x padded + (n - 1) x pad_tolerance_tokens padding.
    rng = random.Random(11)
    for _ in range(300):
        arrivals = [rng.choice([rng.randint(1, 16), rng.randint(1, 512)]) for _ in range(rng.randint(1, 60))]
        cfg = config(
            min_fill=rng.choice([0.3, 0.5, 0.8, 1.0]),
            pad_tolerance_tokens=rng.choice([0, 8, 32]),
            max_batch_tokens=8192,
        )
        for batch in form_all(arrivals, cfg):
            lengths = [arrivals[i] for i in batch]
            padding = padded(lengths) - sum(lengths)
            bound = (1 - cfg.min_fill) * padded(lengths) + cfg.pad_tolerance_tokens * (len(lengths) - 1)
            assert padding <= bound + 1e-9, (lengths, cfg)


def test_with_no_tolerance_every_multi_item_batch_keeps_min_fill() -> None:
    rng = random.Random(13)
    for _ in range(200):
        arrivals = [rng.randint(1, 400) for _ in range(rng.randint(2, 40))]
        cfg = config(min_fill=rng.choice([0.5, 0.8, 0.95]), pad_tolerance_tokens=0)
        for batch in form_all(arrivals, cfg):
            lengths = [arrivals[i] for i in batch]
            assert sum(lengths) >= cfg.min_fill * padded(lengths), (lengths, cfg)


# -- budgets --------------------------------------------------------------------------------


@pytest.mark.parametrize("anchor", [0, 4, 9])
def test_max_batch_size_is_never_exceeded(anchor: int) -> None:
    lo, hi = grow_batch([5] * 10, anchor, config(max_batch_size=4))
    assert hi - lo == 4
    assert lo <= anchor < hi


def test_padded_tokens_never_exceed_max_batch_tokens() -> None:
    # Padded tokens are the longest item times the count: 4 x 100 fits in 450, 5 x 100 does not.
    lo, hi = grow_batch([100] * 10, 0, config(max_batch_tokens=450))
    assert (lo, hi) == (0, 4)
    # Counting padding, not real tokens: 60 + 60 + 60 + 200 = 380 real tokens, but 800 padded.
    lo, hi = grow_batch([60, 60, 60, 200], 0, config(max_batch_tokens=799, min_fill=0))
    assert (lo, hi) == (0, 3)


def test_an_item_longer_than_the_token_budget_still_runs_alone() -> None:
    lengths = [5, 5, 5000, 5000]
    assert grow_batch(lengths, 2, config(max_batch_tokens=4096)) == (2, 3)
    assert grow_batch(lengths, 3, config(max_batch_tokens=4096)) == (3, 4)


def test_random_queues_never_break_the_budgets_and_every_item_is_served_once() -> None:
    rng = random.Random(7)
    for _ in range(300):
        cfg = config(
            max_batch_size=rng.randint(1, 12),
            max_batch_tokens=rng.choice([64, 256, 1024]),
            pad_tolerance_tokens=rng.choice([0, 32, 128]),
            min_fill=rng.choice([0, 0.5, 0.9]),
        )
        arrivals = [rng.randint(1, 300) for _ in range(rng.randint(1, 50))]
        batches = form_all(arrivals, cfg)
        assert sorted(i for batch in batches for i in batch) == list(range(len(arrivals)))
        for batch in batches:
            lengths = [arrivals[i] for i in batch]
            assert len(lengths) <= cfg.max_batch_size
            if len(lengths) > 1:
                assert padded(lengths) <= cfg.max_batch_tokens, (lengths, cfg)


def test_the_oldest_waiting_item_is_in_every_next_batch() -> None:
    rng = random.Random(5)
    for _ in range(100):
        arrivals = [rng.randint(1, 200) for _ in range(rng.randint(1, 40))]
        cfg = config(max_batch_size=rng.randint(1, 8), max_batch_tokens=512, pad_tolerance_tokens=0)
        served: set[int] = set()
        for batch in form_all(arrivals, cfg):
            oldest = min(set(range(len(arrivals))) - served)
            assert oldest in batch
            served.update(batch)


# -- padding tolerance ------------------------------------------------------------------------


def test_a_step_adding_little_padding_is_taken_even_below_min_fill() -> None:
    # [50, 80] is 130 real tokens of 160 (81%): below min_fill 0.9, but the step pads only 30 tokens.
    assert grow_batch([50, 80], 0, config(min_fill=0.9, pad_tolerance_tokens=29)) == (0, 1)
    assert grow_batch([50, 80], 0, config(min_fill=0.9, pad_tolerance_tokens=30)) == (0, 2)


def test_the_tolerance_lets_tiny_items_mix_lengths() -> None:
    # 18 real tokens of 36 padded, but no step adds more than 14 tokens of padding.
    assert grow_batch([1, 5, 12], 0, config(min_fill=0.8, pad_tolerance_tokens=32)) == (0, 3)
    assert grow_batch([1, 5, 12], 0, config(min_fill=0.8, pad_tolerance_tokens=0)) == (0, 1)


def test_the_tolerance_counts_padding_added_to_every_item_already_in_the_batch() -> None:
    cfg = config(min_fill=0.8, pad_tolerance_tokens=32)
    assert grow_batch([50, 80], 0, cfg) == (0, 2)  # pads one item by 30
    assert grow_batch([50, 50, 50, 80], 0, cfg) == (0, 3)  # would pad three items by 30: 90 tokens


def test_the_tolerance_does_not_override_the_budgets() -> None:
    cfg = config(pad_tolerance_tokens=1000, max_batch_size=3, min_fill=1)
    assert grow_batch([1, 2, 3, 4, 5], 0, cfg) == (0, 3)
    cfg = config(pad_tolerance_tokens=1000, max_batch_tokens=8, min_fill=1)
    assert grow_batch([1, 2, 3, 4, 5], 0, cfg) == (0, 2)  # 3 x 3 = 9 > 8


def test_a_packed_runner_is_budgeted_by_real_tokens_and_mixes_lengths() -> None:
    # Padded, 20+20+20+100 would cost 4 x 100 = 400 tokens at 40% fill: the long item waits.
    cfg = config(max_batch_tokens=400)
    assert grow_batch([20, 20, 20, 100], 0, cfg) == (0, 3)
    # Packed, the same four cost their own 160 tokens: one forward pass.
    assert grow_batch([20, 20, 20, 100], 0, cfg, padded=False) == (0, 4)
    # The budget still binds, on real tokens: 100 + 20 + 20 + 20 > 150.
    assert grow_batch([20, 20, 20, 100], 0, config(max_batch_tokens=150), padded=False) == (0, 3)
    assert grow_batch([20] * 10, 0, config(max_batch_size=4), padded=False) == (0, 4)
