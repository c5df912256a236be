"""bge-m3's extra heads over the last hidden state, in numpy: one home for what their outputs mean, whichever
runner computed the hidden state (torch applies the Linear on its device, then finishes here; the ONNX
runner applies it here too, so a torch-free image serves them).

A head is a Linear(hidden, n): `sparse_linear` (n = 1, the lexical weights) and `colbert_linear` (the
multi-vector rows). The model folder holds them as torch state dicts (`<name>.pt`, as bge-m3's hub repo
has them); an exported folder as `<name>.npz` (weight, bias), written by `embedserve quantize`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedserve.models.types import SparseVector, Tokens

SPARSE_HEAD = "sparse_linear"
COLBERT_HEAD = "colbert_linear"


@dataclass(frozen=True, slots=True)
class LinearHead:
    weight: np.ndarray
    """float32 (n, hidden)."""
    bias: np.ndarray
    """float32 (n,)."""

    def __call__(self, hidden: np.ndarray) -> np.ndarray:
        return hidden.astype(np.float32, copy=False) @ self.weight.T + self.bias

    def save(self, path: Path) -> None:
        np.savez(path, weight=self.weight, bias=self.bias)

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        with np.load(path) as arrays:
            return cls(arrays["weight"].astype(np.float32), arrays["bias"].astype(np.float32))


def unused_token_ids(tokenizer: object) -> tuple[int, ...]:
    """The ids bge-m3 leaves out of its lexical weights (FlagEmbedding's `unused_tokens`): a Hugging Face tokenizer's
    cls, eos, pad and unk tokens, where it has them; ascending."""
    ids = (getattr(tokenizer, f"{name}_token_id", None) for name in ("cls", "eos", "pad", "unk"))
    return tuple(sorted({i for i in ids if i is not None}))


def lexical_weights(weights: np.ndarray, batch: Sequence[Tokens], unused_ids: Iterable[int]) -> list[SparseVector]:
    """Per item, FlagEmbedding's lexical weights from its tokens' relu'd sparse-head weights (`weights`,
    (items, padded length)): the largest weight per token id, zero weights and `unused_ids` (bge-m3's cls, eos,
    pad and unk) left out."""
    unused = np.fromiter(unused_ids, dtype=np.int64)
    vectors = []
    for row, tokens in zip(weights, batch):
        ids = np.asarray(tokens.ids, dtype=np.int64)
        values = np.asarray(row[: len(ids)], dtype=np.float32)
        keep = (values > 0) & ~np.isin(ids, unused)
        indices, where = np.unique(ids[keep], return_inverse=True)
        best = np.zeros(len(indices), dtype=np.float32)
        np.maximum.at(best, where, values[keep])
        vectors.append(SparseVector(indices, best))
    return vectors


def colbert_rows(rows: np.ndarray, batch: Sequence[Tokens]) -> list[np.ndarray]:
    """Per item, its multi-vector rows from the colbert head's output over the hidden state without the first
    token (`rows`, (items, padded length - 1, width)): the item's own tokens only, each row L2-normalized."""
    out = []
    for row, item in zip(rows, batch):
        own = np.asarray(row[: len(item) - 1], dtype=np.float32)
        out.append(np.ascontiguousarray(own / np.maximum(np.linalg.norm(own, axis=1, keepdims=True), 1e-12)))
    return out


def span_means(hidden: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Late chunking's pooling: the mean of one item's token vectors (`hidden`, (length, width)) over each
    [start, stop) span, float32 (len(spans), width)."""
    return np.stack([hidden[start:stop].astype(np.float32, copy=False).mean(axis=0) for start, stop in spans])
