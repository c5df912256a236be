"""Several texts a row: a padded batch's real tokens laid into a few rows for a packed ONNX graph.

A padded batch computes every text at its longest text's length. Texts that arrive together differ in length, so
under a server's load a batch of 16 short queries carried ~1.4x its real tokens, and length groups
(models.length_groups) win back only part of that, paying a forward pass for each group. A packed graph
(quantize.packed_graph) takes rows that each hold several whole texts, one after another; `segment_ids` keep each
text's attention to itself and `position_ids` restart at every text, so each text's output is its own padded
forward's up to float rounding. Only the rows' unused tails are padding.

A row's attention costs its width squared, so rows are kept short where the texts allow (`plan_passes`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from embedserve.models.length_groups import RUN_TOKENS, cheapest_cuts

ATTENTION_WIDTH = 1000
"""A row of width w costs w * (1 + w / ATTENTION_WIDTH) token-equivalents: its projections and feed-forward layers
per token, plus attention growing with the width. MiniLM's packed graph (AMD EPYC with AVX-512 VNNI and AVX-VNNI,
2 threads), per token against rows of 32: 1.07x in rows of 128, 1.31x of 256, 1.47x of 512, 2.1x of 1024; rows
of 12 to 192 cost the same within 7% (192 tokens)."""

WIDEST_SHARED_ROW = 128
"""Rows are widened past their group's longest item, to hold more short items each, up to this width."""


def _row_cost(width: int, attention_width: int) -> float:
    """A row's cost in token-equivalents (ATTENTION_WIDTH says why)."""
    return width * (1 + width / attention_width)


def plan_passes(
    lengths: Sequence[int], run_tokens: int = RUN_TOKENS, attention_width: int = ATTENTION_WIDTH
) -> list[tuple[int, list[list[int]]]]:
    """The forward passes for items of `lengths`: each pass's width and rows (the items each row holds).

    Items are split into groups of neighbouring lengths, as models.length_groups splits a padded batch, but a
    group's cost is what it costs packed: its tokens in rows as wide as its longest item (at least their sum over
    that width), each row paying attention for its width, plus `run_tokens` a pass. Each group's items are then laid
    best-fit, longest first, into rows of the width that costs least: its longest item, or a multiple of it up to
    WIDEST_SHARED_ROW (short queries of ~10 tokens filled rows of 16 to 82%, two or three to a row fill more)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    ordered = [lengths[i] for i in order]
    prefix = [0]
    for n in ordered:
        prefix.append(prefix[-1] + n)

    def packed(end: int) -> Iterator[float]:
        width = ordered[end - 1]
        per_row = _row_cost(width, attention_width)
        return (-(-(prefix[end] - prefix[lo]) // width) * per_row + run_tokens for lo in range(end))

    passes: list[tuple[int, list[list[int]]]] = []
    for lo, hi in cheapest_cuts(len(ordered), packed):
        group = order[lo:hi]
        width, rows = _cheapest_rows([lengths[i] for i in group], ordered[hi - 1], attention_width)
        passes.append((width, [[group[k] for k in row] for row in rows]))
    return passes


def _cheapest_rows(lengths: Sequence[int], longest: int, attention_width: int) -> tuple[int, list[list[int]]]:
    total = sum(lengths)
    chosen: tuple[float, int, list[list[int]]] | None = None
    for times in range(1, max(1, WIDEST_SHARED_ROW // longest) + 1):
        width = longest * times
        per_row = _row_cost(width, attention_width)
        if chosen is not None and -(-total // width) * per_row >= chosen[0]:
            break  # wider rows only cost more from here on
        rows = _best_fit(lengths, width)
        if chosen is None or len(rows) * per_row < chosen[0]:
            chosen = (len(rows) * per_row, width, rows)
        if len(rows) == 1:
            break
    assert chosen is not None
    return chosen[1], chosen[2]


def _best_fit(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Each item, longest first, into the row with the least room that still holds it (a new row if none)."""
    rows: list[list[int]] = []
    rooms: list[tuple[int, int]] = []  # (room left, row), sorted
    for item in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        at = bisect.bisect_left(rooms, (lengths[item], -1))
        if at < len(rooms):
            room, row = rooms.pop(at)
        else:
            room, row = width, len(rows)
            rows.append([])
        rows[row].append(item)
        bisect.insort(rooms, (room - lengths[item], row))
    return rows


@dataclass(frozen=True, slots=True)
class PackedPass:
    """One forward pass of packed rows: the graph's inputs, and where each real token of the padded batch sits."""

    rows: int
    width: int
    source: np.ndarray
    """Flat positions (item * length + column) of the pass's tokens in the padded batch."""
    target: np.ndarray
    """Flat positions (row * width + column) of the same tokens in the pass's rows."""
    feeds: dict[str, np.ndarray]
    """int64 [rows, width]: input_ids, segment_ids (1, 2, ... a text within its row, 0 for unused places),
    position_ids (from 0 in every text), and token_type_ids where the batch has them."""


def pack(arrays: dict[str, np.ndarray], pad_id: int, run_tokens: int = RUN_TOKENS) -> list[PackedPass]:
    """The packed passes of a padded batch (`arrays`: input_ids, attention_mask, token_type_ids of [items, length]);
    a text's tokens are where its attention mask is 1, on either side of its padding."""
    mask = arrays["attention_mask"].astype(bool)
    items, length = mask.shape
    lengths = mask.sum(axis=1)
    flat = {name: arrays[name].reshape(-1) for name in ("input_ids", "token_type_ids") if name in arrays}
    positions = np.flatnonzero(mask)
    first = np.cumsum(lengths) - lengths  # each item's first token in `positions`
    passes = []
    # An item with no tokens (none of the built-in tokenizers makes one) still takes a place, computing nothing.
    for width, rows in plan_passes(np.maximum(lengths, 1).tolist(), run_tokens):
        members = [item for row in rows for item in row]
        row_of = np.repeat(np.arange(len(rows)), [len(row) for row in rows])
        sizes = lengths[members]
        start = np.concatenate([np.cumsum(lengths[row]) - lengths[row] for row in rows])  # place in its row
        segment = np.concatenate([np.arange(1, len(row) + 1) for row in rows])
        column = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # place in its text
        source = positions[np.repeat(first[members], sizes) + column]
        target = np.repeat(row_of * width + start, sizes) + column
        feeds: dict[str, np.ndarray] = {}
        for name, fill, values in (
            ("input_ids", pad_id, flat["input_ids"][source]),
            ("segment_ids", 0, np.repeat(segment, sizes)),
            ("position_ids", 0, column),
            *((("token_type_ids", 0, flat["token_type_ids"][source]),) if "token_type_ids" in flat else ()),
        ):
            grid = np.full(len(rows) * width, fill, dtype=np.int64)
            grid[target] = values
            feeds[name] = grid.reshape(len(rows), width)
        passes.append(PackedPass(len(rows), width, source, target, feeds))
    return passes


def run_packed(arrays: dict[str, np.ndarray], pad_id: int, forward: Callable[[PackedPass], np.ndarray]) -> np.ndarray:
    """A packed graph's per-token output ([rows, width, ...], from `forward` of each pass) for a padded batch, laid
    back as the padded batch's ([items, length, ...]), zero where the batch pads."""
    items, length = arrays["attention_mask"].shape
    out: np.ndarray | None = None
    for packed in pack(arrays, pad_id):
        result = forward(packed)
        tail = result.shape[2:]
        if out is None:
            out = np.zeros((items * length, *tail), dtype=result.dtype)
        out[packed.source] = result.reshape(-1, *tail)[packed.target]
    assert out is not None
    return out.reshape(items, length, *out.shape[1:])
