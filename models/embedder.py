"""An embedding model as the server uses it: tokenize (with the runner's tokenizer), run (via the
batcher), finish per request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedserve.models.backend import Runner
from embedserve.models.errors import InvalidInput
from embedserve.models.pooling import l2_normalize
from embedserve.models.prompts import prompt_text
from embedserve.models.types import ModelInfo, Tokens


@dataclass(slots=True)
class Embedder:
    runner: Runner

    @property
    def info(self) -> ModelInfo:
        return self.runner.info

    def prompt(self, name: str | None) -> str:
        return prompt_text(self.info, name)

    def tokenize(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        *,
        prompt_name: str | None = None,
        truncate: bool = True,
    ) -> list[Tokens]:
        """Texts get the named (or default) prompt; token-id inputs are taken as they are."""
        if inputs and isinstance(inputs[0], str):
            prefix = self.prompt(prompt_name)
            return self.runner.tokenizer.encode(inputs, prompt=prefix, truncate=truncate)  # type: ignore[arg-type]
        if prompt_name is not None:
            raise InvalidInput("prompt_name applies to text inputs, not token ids", param="prompt_name")
        return self.runner.tokenizer.encode_ids(inputs, truncate=truncate)  # type: ignore[arg-type]

    def tokenize_chunks(self, chunks: Sequence[str], *, prompt_name: str | None = None) -> Tokens:
        """Late chunking's one item (models.tokenizer.TextTokenizer.encode_chunks): the chunks of one document, the
        named (or default) prompt before the first."""
        encode_chunks = getattr(self.runner.tokenizer, "encode_chunks", None)
        if encode_chunks is None:
            raise InvalidInput(f"model {self.info.id!r} cannot encode chunks together (late chunking)", param="model")
        return encode_chunks(chunks, prompt=self.prompt(prompt_name))

    def check_dimensions(self, dimensions: int | None) -> None:
        """A request's `dimensions` must fit the model: checked before any work is done."""
        if dimensions is not None and not 0 < dimensions <= self.info.width:
            raise InvalidInput(
                f"dimensions {dimensions} is larger than the {self.info.width} dimensions of model {self.info.id!r}"
                if dimensions > 0
                else "dimensions must be at least 1",
                param="dimensions",
            )

    def finish(self, raw: np.ndarray, *, normalize: bool | None = None, dimensions: int | None = None) -> np.ndarray:
        """Per-request post-processing: Matryoshka truncation (`dimensions`, checked beforehand by
        `check_dimensions`), then L2 normalization."""
        if dimensions is not None:
            raw = raw[:, :dimensions]
        if normalize if normalize is not None else self.info.normalized:
            return l2_normalize(raw)
        return np.ascontiguousarray(raw, dtype=np.float32)
