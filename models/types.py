"""The values that cross the model layer's boundary: tokenized items, what a loaded model is, and
what a request gets back (one result type per kind, whoever computed it: a local runner or an upstream)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Tokens:
    """One tokenized item, special tokens included, already truncated to the model's limit."""

    ids: list[int]
    type_ids: list[int] | None = None
    truncated: bool = False
    spans: tuple[tuple[int, int], ...] = ()
    """Late chunking's chunks: each chunk's [start, stop) token positions in `ids` (models.backend: CHUNKS);
    empty for a plain item."""

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What clients and operators see of a loaded model."""

    id: str
    kind: str
    width: int
    """What one item's output holds: an embedding's dimensions; a reranker's or classifier's logits (its
    label count)."""
    max_length: int
    backend: str
    device: str
    dtype: str
    normalized: bool
    """Whether the folder's own pipeline ends in L2 normalization."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Named prompts (prefixes) from the folder's configuration and the model's settings."""
    default_prompt: str | None = None
    labels: tuple[str, ...] = ()
    """A classifier's label names, by output index (its folder's id2label)."""
    output_widths: dict[str, int] = field(default_factory=dict)
    """The width of each row of its other outputs (models.backend: MULTIVECTOR, ...) where the runner knows it before
    running: a request for another width is refused before any work."""


@dataclass(frozen=True, slots=True)
class TokenSpan:
    """One token of a text as the model's tokenizer splits it: its id, its text (the characters it
    covers; a special token's own string), and where it covers them (None for special tokens)."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


@dataclass(frozen=True, slots=True)
class SparseVector:
    """Lexical weights of one text: token ids (ascending, unique) and their weights (all > 0)."""

    indices: np.ndarray
    values: np.ndarray


@dataclass(slots=True)
class Embeddings:
    """A request's finished vectors (float32, one row per input) and its input tokens."""

    vectors: np.ndarray
    tokens: int


@dataclass(slots=True)
class SparseEmbeddings:
    vectors: list[SparseVector]
    tokens: int


@dataclass(slots=True)
class Scores:
    """One relevance score per document, in the documents' order, and the request's input tokens."""

    values: np.ndarray
    tokens: int


@dataclass(slots=True)
class Predictions:
    """A classifier's answer: one row of label scores per input (probabilities, or raw logits when
    asked), and the request's input tokens."""

    values: np.ndarray
    tokens: int


@dataclass(slots=True)
class TokenEmbeddings:
    """Per input, its last hidden state: one float32 row per token, special tokens included."""

    vectors: list[np.ndarray]
    tokens: int


@dataclass(slots=True)
class MultiVectors:
    """Per input, its multi-vector (ColBERT) rows: float32, one L2-normalized row per token but the first."""

    vectors: list[np.ndarray]
    tokens: int
