"""A sequence classifier as the server uses it: texts (or text pairs) in, label scores out.

It runs on a reranker's runner (a sequence-classification model is what a cross-encoder is): the same
forward, given single texts; what differs is reading the logits. As TEI's /predict does: softmax over
the labels, or the sigmoid for a one-label model, or the raw logits when asked. The activations here
are the ones rerankers' scores use too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from embedserve.models.backend import Runner
from embedserve.models.prompts import prompt_text
from embedserve.models.types import ModelInfo, Tokens

TextOrPair = str | tuple[str, str]
Function = Literal["softmax", "sigmoid", "none"]
"""What turns logits into scores (huggingface_hub's `function_to_apply`); "none" keeps the logits."""


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """A numerically stable sigmoid, float32: 1 / (1 + exp(-x)) = exp(-log(1 + exp(-x)))."""
    return np.exp(-np.logaddexp(0.0, -logits)).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, float32."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass(slots=True)
class Classifier:
    runner: Runner

    @property
    def info(self) -> ModelInfo:
        return self.runner.info

    def tokenize(
        self, inputs: Sequence[TextOrPair], *, prompt_name: str | None = None, truncate: bool = True
    ) -> list[Tokens]:
        """Texts with the named (or default) prompt; pairs as the model's tokenizer encodes a pair."""
        prefix = prompt_text(self.info, prompt_name)
        tokenizer = self.runner.tokenizer
        texts = [i for i, item in enumerate(inputs) if isinstance(item, str)]
        out: list[Tokens | None] = [None] * len(inputs)
        for i, tokens in zip(texts, tokenizer.encode([inputs[i] for i in texts], prompt=prefix, truncate=truncate)):
            out[i] = tokens
        for i, item in enumerate(inputs):
            if not isinstance(item, str):
                first, second = item
                out[i] = tokenizer.encode_pairs(prefix + first, [second], truncate=truncate)[0]
        return out  # type: ignore[return-value]

    @staticmethod
    def scores(raw: np.ndarray, function: Function | None = None) -> np.ndarray:
        """(inputs, labels) float32 scores by `function`; by default, as TEI: softmax probabilities, or a
        one-label model's sigmoid."""
        logits = np.asarray(raw, dtype=np.float32)
        if logits.ndim == 1:
            logits = logits[:, None]
        if function is None:
            function = "sigmoid" if logits.shape[1] == 1 else "softmax"
        if function == "none":
            return logits
        return sigmoid(logits) if function == "sigmoid" else softmax(logits)
