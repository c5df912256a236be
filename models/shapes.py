"""Shape buckets for compiled forward passes: a small, finite set of sequence lengths to pad to.

A compiled graph is specialised to the shapes it was traced with, so an unbucketed server would
compile again for nearly every batch (the batcher makes a new longest length almost every time).
Sequence lengths are padded up to a bucket and each bucket is compiled once, at start-up (with
EMBEDSERVE_COMPILE_LENGTHS=dynamic one graph serves every bucket; see models.compiled).

The grid: multiples of 16 up to 128, then four steps per doubling (160, 192, 224, 256, 320, ...,
512, 640, ...), and the model's limit itself as the last bucket. Multiples of 16 suit tensor-core
tiles and cost a short text at most 15 padded tokens, about what the batcher's own
`pad_tolerance_tokens` (32) already allows per item; past 128 a quarter-octave step pads at most
~25% (~11% on average) while the number of buckets grows only logarithmically with the limit: 16
buckets for 512 tokens, 24 for 2048, 32 for 8192.

Rows are not bucketed: the compiled graph takes the row count as a symbolic size (one graph per
length bucket serves every row count), which pads no rows under full batches. Only a single-row
batch is padded, to MIN_ROWS, because the compiler specialises sizes 0 and 1 and would trace a
second graph for them.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

STEP = 16
"""Bucket step up to LINEAR_UNTIL tokens."""
LINEAR_UNTIL = 128
STEPS_PER_OCTAVE = 4
"""Buckets per doubling of the length past LINEAR_UNTIL."""
MIN_ROWS = 2
"""Rows a compiled batch has at least (sizes 0 and 1 get their own graphs in torch.compile)."""


def length_buckets(max_length: int) -> tuple[int, ...]:
    """The lengths batches are padded to, ascending, the last one `max_length` itself."""
    if max_length < 1:
        raise ValueError(f"max_length must be positive, not {max_length}")
    buckets = list(range(STEP, min(max_length, LINEAR_UNTIL) + 1, STEP))
    octave = LINEAR_UNTIL
    while octave < max_length:
        step = octave // STEPS_PER_OCTAVE
        buckets += [n for n in range(octave + step, 2 * octave + 1, step) if n < max_length]
        octave *= 2
    if not buckets or buckets[-1] != max_length:
        buckets.append(max_length)
    return tuple(buckets)


def bucket(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `length` (ValueError past the largest)."""
    i = bisect.bisect_left(buckets, length)
    if i == len(buckets):
        raise ValueError(f"length {length} is past the largest bucket ({buckets[-1]})")
    return buckets[i]


def padded_rows(rows: int) -> int:
    """Rows a batch is run with: at least MIN_ROWS, so one graph serves every row count."""
    return max(rows, MIN_ROWS)


def warm_shapes(buckets: Sequence[int], max_batch_tokens: int, max_batch_size: int) -> list[tuple[int, int]]:
    """(rows, length) pairs that warm every bucket: MIN_ROWS rows (the compile), then the most rows a
    batch padded to that bucket can have under the batcher's limits (its longest item is longer than
    the previous bucket), so the allocator reserves the largest activations at start-up too."""
    shapes = []
    previous = 0
    for length in buckets:
        most = max(MIN_ROWS, min(max_batch_size, max_batch_tokens // (previous + 1)))
        shapes.append((MIN_ROWS, length))
        if most > MIN_ROWS:
            shapes.append((most, length))
        previous = length
    return shapes
