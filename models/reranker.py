"""A reranker as the server uses it: tokenize (query, document) pairs, run (via the batcher), score."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedserve.models.backend import Runner
from embedserve.models.classifier import sigmoid
from embedserve.models.errors import InvalidInput
from embedserve.models.prompts import prompt_text
from embedserve.models.types import ModelInfo, Tokens


def scores_per_pair(logits: np.ndarray, num_labels: int, count: int) -> np.ndarray:
    """A runner's logits as float32: shape (count,) for one label, (count, num_labels) otherwise."""
    logits = np.asarray(logits, dtype=np.float32)
    return np.ascontiguousarray(logits.reshape(count) if num_labels == 1 else logits)


@dataclass(slots=True)
class Reranker:
    runner: Runner

    @property
    def info(self) -> ModelInfo:
        return self.runner.info

    def tokenize(
        self,
        query: str,
        documents: Sequence[str],
        *,
        prompt_name: str | None = None,
        truncate: bool = True,
        instruction: str | None = None,
    ) -> list[Tokens]:
        """One item per document: the pair (prompt + query, document), truncated to the model's limit; an LLM
        reranker's (models.yes_no) written into its template with `instruction` (default: its template's)."""
        prefix = prompt_text(self.info, prompt_name)
        encode_pairs = self.runner.tokenizer.encode_pairs
        if instruction is None:
            return encode_pairs(prefix + query, documents, truncate=truncate)
        if "instruction" not in inspect.signature(encode_pairs).parameters:
            raise InvalidInput(
                f"instruction applies to LLM rerankers (Qwen3-Reranker); {self.info.id!r} takes none",
                param="instruction",
            )
        return encode_pairs(prefix + query, documents, truncate=truncate, instruction=instruction)

    @staticmethod
    def scores(raw: np.ndarray, *, raw_scores: bool = False) -> np.ndarray:
        return relevance(raw, raw_scores=raw_scores)


def relevance(raw: np.ndarray, *, raw_scores: bool = False) -> np.ndarray:
    """One float32 score per pair from a reranker runner's logits.

    One label (bge-reranker, ms-marco cross-encoders): sigmoid of the logit, or the logit itself
    with `raw_scores`. Several labels: the softmax probability of the last label (the "relevant"
    class of 2-label classifiers), or with `raw_scores` its log-odds, `logit_last - logsumexp(others)`
    (for two labels `l1 - l0`), so that the sigmoid of a raw score is always the relevance score.
    """
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim == 1:
        logits = raw
    elif raw.ndim == 2:
        logits = raw[:, -1] - np.logaddexp.reduce(raw[:, :-1], axis=1)
    else:
        raise ValueError(f"reranker logits must be 1- or 2-dimensional, not shape {raw.shape}")
    if raw_scores:
        return np.ascontiguousarray(logits, dtype=np.float32)
    return sigmoid(logits)
