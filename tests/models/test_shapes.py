"""Length buckets: a small, finite set that every batch the batcher can form falls into."""

from __future__ import annotations

import pytest

from embedserve.models.shapes import MIN_ROWS, bucket, length_buckets, padded_rows, warm_shapes


@pytest.mark.parametrize("max_length", [1, 10, 16, 100, 128, 130, 256, 510, 512, 2048, 8192])
def test_buckets_ascend_and_end_at_the_limit(max_length: int) -> None:
    buckets = length_buckets(max_length)
    assert list(buckets) == sorted(set(buckets))
    assert buckets[-1] == max_length and buckets[0] >= 1
    assert all(b % 16 == 0 for b in buckets if b <= 128 and b != max_length)


@pytest.mark.parametrize(("max_length", "count"), [(128, 8), (256, 12), (512, 16), (2048, 24), (8192, 32)])
def test_the_number_of_buckets_grows_with_the_log_of_the_limit(max_length: int, count: int) -> None:
    assert len(length_buckets(max_length)) == count


@pytest.mark.parametrize("max_length", [200, 512, 8192])
def test_bucket_is_the_least_bucket_that_holds_the_length(max_length: int) -> None:
    buckets = length_buckets(max_length)
    previous = 0
    for n in range(1, max_length + 1):
        b = bucket(n, buckets)
        assert b >= n and b in buckets
        assert b >= previous  # monotone
        assert not [c for c in buckets if n <= c < b]
        if n > 128:
            assert b <= 1.25 * n  # a quarter-octave step pads at most 25%
        else:
            assert b - n < 16
        previous = b
    with pytest.raises(ValueError):
        bucket(max_length + 1, buckets)


def test_only_single_rows_are_padded() -> None:
    assert [padded_rows(n) for n in (1, 2, 3, 17, 128)] == [MIN_ROWS, 2, 3, 17, 128]


def test_warm_shapes_cover_every_batch_the_batcher_can_form() -> None:
    buckets, budget, size = length_buckets(512), 16384, 128
    shapes = warm_shapes(buckets, budget, size)
    most = {length: max(rows for rows, n in shapes if n == length) for length in buckets}
    assert set(most) == set(buckets)
    assert all(MIN_ROWS <= rows <= size for rows, _ in shapes)
    assert len(shapes) <= 2 * len(buckets)
    for longest in range(1, 513):
        rows = max(1, min(size, budget // longest))  # the batcher's fullest batch with this longest item
        assert padded_rows(rows) <= most[bucket(longest, buckets)]


def test_a_budget_below_one_long_item_still_warms_two_rows() -> None:
    shapes = warm_shapes(length_buckets(2048), 1024, 128)
    assert (MIN_ROWS, 2048) in shapes
