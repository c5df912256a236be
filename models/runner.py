"""The narrow interface between the batcher and a model backend.

A runner turns texts into `Tokens` (cheap, any thread) and runs a list of `Tokens` as one
padded batch (the worker thread). The batcher only ever sees `Tokens` and their lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from models.tokenizer import PairTokenizer


@dataclass(frozen=True, slots=True)
class Tokens:
    """One tokenized item, special tokens included, already truncated to the model's limit."""

    ids: list[int]
    type_ids: list[int] | None = None
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What clients and operators see of a loaded model."""

    id: str
    kind: str
    dimension: int
    max_length: int
    backend: str
    device: str
    dtype: str
    normalized: bool
    """Whether the folder's own pipeline ends in L2 normalization."""
    sparse: bool = False
    """Whether the model also gives sparse lexical weights (bge-m3's sparse head)."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Named prompts (prefixes) from the folder's configuration and the model's settings."""
    default_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class SparseVector:
    """Lexical weights of one text: token ids (ascending, unique) and their weights (all > 0)."""

    indices: np.ndarray
    values: np.ndarray


class EmbeddingRunner(Protocol):
    info: ModelInfo

    def tokenize(self, texts: Sequence[str], *, prompt: str = "", truncate: bool = True) -> list[Tokens]:
        """Tokenizes `prompt + text` for each text."""
        ...

    def tokenize_ids(self, ids: Sequence[Sequence[int]], *, truncate: bool = True) -> list[Tokens]: ...

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        """Embeds one batch: float32 array of shape (len(batch), dimension), not normalized."""
        ...

    def run_sparse(self, batch: Sequence[Tokens]) -> list[SparseVector]:
        """Sparse lexical weights of one batch (only where `info.sparse`)."""
        ...


class RerankRunner(Protocol):
    info: ModelInfo
    tokenizer: PairTokenizer
    """Encodes (query, document) pairs as the model's own tokenizer does."""

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        """Raw logits, float32: shape (len(batch),) for one label, (len(batch), labels) otherwise."""
        ...
