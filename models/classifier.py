"""A sequence classifier as the server uses it: texts (or text pairs) in, label scores out.

It runs on a reranker's runner (a sequence-classification model is what a cross-encoder is): the same
forward, given single texts; what differs is reading the logits. As TEI's /predict does: softmax over
the labels, or the sigmoid for a one-label model, or the raw logits when asked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.backend import RerankRunner
from models.prompts import prompt_text
from models.types import ModelInfo, Tokens

TextOrPair = str | tuple[str, str]


@dataclass(slots=True)
class Classifier:
    runner: RerankRunner

    @property
    def info(self) -> ModelInfo:
        return self.runner.info

    def tokenize(
        self, inputs: Sequence[TextOrPair], *, prompt_name: str | None = None, truncate: bool = True
    ) -> list[Tokens]:
        """Texts with the named (or default) prompt; pairs as the model's tokenizer encodes a pair."""
        prefix = prompt_text(self.info, prompt_name)
        texts = [i for i, item in enumerate(inputs) if isinstance(item, str)]
        out: list[Tokens | None] = [None] * len(inputs)
        for i, tokens in zip(texts, self.runner.tokenize([inputs[i] for i in texts], prompt=prefix, truncate=truncate)):
            out[i] = tokens
        for i, item in enumerate(inputs):
            if not isinstance(item, str):
                first, second = item
                out[i] = self.runner.tokenize_pairs(prefix + first, [second], truncate=truncate)[0]
        return out  # type: ignore[return-value]

    @staticmethod
    def scores(raw: np.ndarray, *, raw_scores: bool = False) -> np.ndarray:
        """(inputs, labels) float32: softmax probabilities, a one-label model's sigmoid, or the logits."""
        logits = np.asarray(raw, dtype=np.float32)
        if logits.ndim == 1:
            logits = logits[:, None]
        if raw_scores:
            return logits
        if logits.shape[1] == 1:
            return np.exp(-np.logaddexp(0.0, -logits)).astype(np.float32)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
