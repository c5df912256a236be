"""One timed batch before a model is served: the throughput its batcher judges the first requests' deadlines by.

Without it a batcher has measured nothing when the first burst arrives, and must either admit it blind (torch on
long texts once took ~50 s of work into a 30 s deadline, ending in 504s after the work was spent) or refuse it by a
guess. The probe runs a few texts of ~PROBE_TEXT_TOKENS tokens, longer than most queries (the longer the text, the
lower the rate per token). On MiniLM (AMD EPYC VNNI) it read 0.91-1.12x the steady rate of batches of 256-, 48- and
10-token texts, ONNX and torch alike, in 0.05-0.08 s; the batcher's DEADLINE_SHARE leaves room for that, and real
batches take over as they finish (batching.batcher weighs each one more than the last)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from embedserve.models.classifier import Classifier
from embedserve.models.embedder import Embedder
from embedserve.models.reranker import Reranker
from embedserve.models.types import Tokens

PROBE_TOKENS = 512
"""Padded tokens in the probe's batch (fewer where the batcher's budget is smaller). ONNX Runtime's arena keeps what
its largest batch needed: on MiniLM, 4 texts of 128 tokens left RSS 0.9 MB higher, 4 of 256 tokens 26 MB."""

PROBE_TEXT_TOKENS = 128
_SENTENCE = "A sentence of plain words keeps the model busy for a few more positions of the sequence. "
_QUERY = "what keeps a model busy?"


@dataclass(frozen=True, slots=True)
class Probe:
    tokens: int
    """Real tokens in the batch (what the batcher counts: each item's length)."""
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def probe(model: Embedder | Reranker | Classifier, *, max_batch_tokens: int, max_batch_size: int) -> Probe:
    """Runs one batch of the model within the batcher's limits and times it (blocking: call it from a thread)."""
    sentence = len(_tokenize(model, [_SENTENCE])[0])  # ~20 tokens in the usual vocabularies, more in a tiny one
    text = _SENTENCE * max(1, PROBE_TEXT_TOKENS // sentence)
    one = _tokenize(model, [text])[0]
    count = max(1, min(max_batch_size, min(PROBE_TOKENS, max_batch_tokens) // max(1, len(one))))
    batch = [one] * count  # the same text each time: tokenized once
    started = time.perf_counter()
    model.runner.run(batch)
    return Probe(sum(len(tokens) for tokens in batch), time.perf_counter() - started)


def _tokenize(model: Embedder | Reranker | Classifier, texts: list[str]) -> list[Tokens]:
    if isinstance(model, Reranker):
        return model.tokenize(_QUERY, texts)
    return model.tokenize(texts)
