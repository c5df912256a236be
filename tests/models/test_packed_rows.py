"""Several texts a row (models.packed_rows): which texts share a row, and the inputs a packed graph is given."""

from __future__ import annotations

import numpy as np
import pytest

from embedserve.models.packed_rows import WIDEST_SHARED_ROW, pack, plan_passes, run_packed


def padded(lengths: list[int], *, left: bool = False, type_ids: bool = True) -> dict[str, np.ndarray]:
    """A padded batch whose token ids say where they came from: item * 1000 + place in the item + 1."""
    width = max(lengths)
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for item, n in enumerate(lengths):
        columns = slice(width - n, width) if left else slice(0, n)
        ids[item, columns] = item * 1000 + np.arange(n) + 1
        mask[item, columns] = 1
    arrays = {"input_ids": ids, "attention_mask": mask}
    if type_ids:
        arrays["token_type_ids"] = (ids % 2) * mask
    return arrays


def placed(lengths: list[int]) -> list[int]:
    return sorted(item for _, rows in plan_passes(lengths) for row in rows for item in row)


@pytest.mark.parametrize(
    "lengths", [[7], [5, 3, 9, 2, 7, 7, 1], [12] * 16, list(range(1, 40)), [3, 250, 4, 5, 240, 9, 128]]
)
def test_every_item_lands_in_one_row_and_every_row_fits_its_pass(lengths: list[int]) -> None:
    assert placed(lengths) == list(range(len(lengths)))
    for width, rows in plan_passes(lengths):
        assert all(sum(lengths[i] for i in row) <= width for row in rows)
        assert max(lengths[i] for row in rows for i in row) <= width


def test_short_texts_of_unlike_lengths_share_rows_and_long_ones_are_not_padded_by_them() -> None:
    queries = [4, 9, 6, 11, 5, 8, 10, 7, 6, 12, 5, 9, 7, 8, 6, 10]  # a batch of short queries in arrival order
    ((width, rows),) = plan_passes(queries)
    assert len(rows) < len(queries) and width <= WIDEST_SHARED_ROW
    real, computed = sum(queries), len(rows) * width
    assert real / computed > 0.8 > sum(queries) / (len(queries) * max(queries))  # padded, they would fill 0.64

    passes = plan_passes([*queries, 250, 240])
    widest = max(passes)
    assert widest[0] == 250 and len(widest[1]) == 2, "the two passages run apart from the queries"


def test_texts_of_one_length_that_fill_their_rows_stay_one_a_row() -> None:
    ((width, rows),) = plan_passes([8] * 12)
    assert (width, len(rows)) == (8, 12)


@pytest.mark.parametrize("left", [False, True])
def test_each_text_keeps_its_tokens_in_order_with_its_own_segment_and_positions_from_zero(left: bool) -> None:
    lengths = [5, 3, 9, 2, 7, 7, 1]
    arrays = padded(lengths, left=left)
    seen: dict[int, list[int]] = {}
    for packed in pack(arrays, pad_id=0):
        feeds = packed.feeds
        assert set(feeds) == {"input_ids", "segment_ids", "position_ids", "token_type_ids"}
        assert all(v.shape == (packed.rows, packed.width) and v.dtype == np.int64 for v in feeds.values())
        for row in range(packed.rows):
            ids, segments, positions = (feeds[n][row] for n in ("input_ids", "segment_ids", "position_ids"))
            assert (ids[segments == 0] == 0).all(), "unused places hold the pad id"
            for segment in set(segments[segments > 0].tolist()):
                tokens = ids[segments == segment]
                item = int(tokens[0]) // 1000
                assert positions[segments == segment].tolist() == list(range(len(tokens)))
                assert (feeds["token_type_ids"][row][segments == segment] == tokens % 2).all()
                seen[item] = tokens.tolist()
    assert seen == {i: [i * 1000 + k + 1 for k in range(n)] for i, n in enumerate(lengths)}


def test_the_output_is_laid_back_as_the_padded_batch_zero_where_it_pads() -> None:
    arrays = padded([5, 3, 9, 2, 7, 7, 1], left=True, type_ids=False)

    def forward(packed):  # type: ignore[no-untyped-def]  # a per-token "model": each token's id, twice
        assert "token_type_ids" not in packed.feeds
        return np.stack([packed.feeds["input_ids"], -packed.feeds["input_ids"]], axis=-1).astype(np.float32)

    out = run_packed(arrays, 0, forward)
    expected = arrays["input_ids"] * arrays["attention_mask"]
    assert out.shape == (*expected.shape, 2)
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 1], -expected)


def test_an_item_without_tokens_gets_a_zero_row_and_the_others_their_own() -> None:
    arrays = padded([3, 1, 4])
    arrays["attention_mask"][1] = 0
    out = run_packed(arrays, 0, lambda packed: packed.feeds["input_ids"][..., None].astype(np.float32))
    np.testing.assert_array_equal(out[..., 0], arrays["input_ids"] * arrays["attention_mask"])
