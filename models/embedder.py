"""An embedding model as the server uses it: tokenize, run (via the batcher), finish per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from models.errors import InvalidInput
from models.runner import EmbeddingRunner, ModelInfo, Tokens


@dataclass(slots=True)
class Embedder:
    runner: EmbeddingRunner

    @property
    def info(self) -> ModelInfo:
        return self.runner.info

    def tokenize(self, inputs: Sequence[str] | Sequence[Sequence[int]], *, truncate: bool = True) -> list[Tokens]:
        if inputs and isinstance(inputs[0], str):
            return self.runner.tokenize(inputs, truncate=truncate)  # type: ignore[arg-type]
        return self.runner.tokenize_ids(inputs, truncate=truncate)  # type: ignore[arg-type]

    def finish(self, raw: np.ndarray, *, normalize: bool | None = None, dimensions: int | None = None) -> np.ndarray:
        """Per-request post-processing: Matryoshka truncation, then L2 normalization."""
        if dimensions is not None:
            if not 0 < dimensions <= self.info.dimension:
                raise InvalidInput(
                    f"dimensions must be between 1 and {self.info.dimension} for model {self.info.id!r}",
                    param="dimensions",
                )
            raw = raw[:, :dimensions]
        if normalize if normalize is not None else self.info.normalized:
            norms = np.linalg.norm(raw, axis=1, keepdims=True)
            raw = raw / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(raw, dtype=np.float32)
