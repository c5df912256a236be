"""A test backend written from models/README.md ("Adding a backend") alone: random projection.

Each token id of a real WordPiece vocabulary (the model folder's own tokenizer.json) maps to a
seeded random row; an embedding is the mean of its tokens' rows over the attention mask, computed
on a padded batch (so it declares cost "padded"), and each token's row is its TOKENS output. The
reranker scores a (query, document) pair by the scaled cosine of the mean rows of its two halves,
told apart by the pair's type ids. numpy and tokenizers only: one module, one `register` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from embedserve.models.backend import NO_OUTPUTS, TOKENS, BackendEntry, CpuDefaults, register
from embedserve.models.tokenizer import PairTokenizer, TextTokenizer
from embedserve.models.types import ModelInfo, Tokens

WIDTH = 32
SEED = 0
DEFAULT_MAX_LENGTH = 256
SCALE = 10.0
"""The reranker's logits: SCALE x the cosine of its halves' mean rows, in [-SCALE, SCALE]."""


def projection_table(vocab_size: int, width: int = WIDTH, seed: int = SEED) -> np.ndarray:
    """One float32 row per token id, the same for a seed wherever it is made."""
    return np.random.default_rng(seed).standard_normal((vocab_size, width)).astype(np.float32)


class _Projection:
    """What both runners share: the folder's tokenizer.json, the table, and the runner's declarations."""

    cost = "padded"
    cpu = CpuDefaults(batch_tokens=4096, workers=1)

    def __init__(self, spec: Any, source: str, kind: str, width: int) -> None:
        backend = Tokenizer.from_file(str(Path(source) / "tokenizer.json"))
        self._max_length = spec.max_length or DEFAULT_MAX_LENGTH
        self._pad_id = backend.token_to_id("[PAD]") or 0
        self._vocab_size = backend.get_vocab_size(with_added_tokens=True)
        self._backend = backend
        self.table = projection_table(self._vocab_size)
        self.info = ModelInfo(
            id=spec.id,
            kind=kind,
            width=width,
            max_length=self._max_length,
            backend=spec.backend,
            device="cpu",
            dtype="float32",
            normalized=kind == "embed",
            prompts=dict(spec.prompts),
            default_prompt=spec.default_prompt,
        )

    def warm(self, *, max_batch_tokens: int, max_batch_size: int) -> None:
        return None  # nothing to compile

    def close(self) -> None:
        self.table = np.zeros((0, WIDTH), dtype=np.float32)


class ProjectionEmbeddingRunner(_Projection):
    def __init__(self, spec: Any, source: str) -> None:
        super().__init__(spec, source, "embed", WIDTH)
        self.tokenizer = TextTokenizer(
            self._backend,
            max_length=self._max_length,
            pad_id=self._pad_id,
            vocab_size=self._vocab_size,
            with_type_ids=True,
            copy=False,
        )
        self.outputs = {TOKENS: self.token_vectors}

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        features = self.tokenizer.pad(batch)
        mask = features["attention_mask"].astype(np.float32)[:, :, None]  # (batch, longest, 1)
        rows = self.table[features["input_ids"]]  # padding included: the table's [PAD] row, masked out
        return ((rows * mask).sum(axis=1) / mask.sum(axis=1)).astype(np.float32)

    def token_vectors(self, batch: Sequence[Tokens]) -> list[np.ndarray]:
        return [self.table[np.asarray(item.ids)] for item in batch]


class ProjectionRerankRunner(_Projection):
    def __init__(self, spec: Any, source: str) -> None:
        super().__init__(spec, source, "rerank", 1)
        self.tokenizer = PairTokenizer(
            self._backend, max_length=self._max_length, pad_id=self._pad_id, with_type_ids=True, copy=False
        )
        self.outputs = NO_OUTPUTS

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        features = self.tokenizer.pad(batch)
        mask = features["attention_mask"].astype(np.float32)
        second = features["token_type_ids"].astype(np.float32)
        rows = self.table[features["input_ids"]]
        halves = []
        for weights in (mask * (1 - second), mask * second):  # the query's tokens, the document's
            halves.append((rows * weights[:, :, None]).sum(axis=1) / weights.sum(axis=1, keepdims=True))
        query, document = halves
        cosine = (query * document).sum(axis=1) / (np.linalg.norm(query, axis=1) * np.linalg.norm(document, axis=1))
        return (SCALE * cosine).astype(np.float32)


ENTRY = register(
    BackendEntry(
        "projection",
        ("numpy", "tokenizers"),
        "",  # both are embedserve's own dependencies: no extra installs them
        {
            "embed": "tests.readme_backend:ProjectionEmbeddingRunner",
            "rerank": "tests.readme_backend:ProjectionRerankRunner",
        },
    )
)
