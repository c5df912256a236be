"""A real, small backend for tests: words hashed into a fixed random table, no model files, no torch.

It implements models.backend's `Runner` (and its tokenizer, `ModelTokenizer`) and is registered like any backend (`register` below,
one entry), which is the proof that adding a backend takes one module and one registry entry. Route
tests that check the HTTP contract, not a model's numbers, use it: it loads in milliseconds.

A text's vector is the mean of its words' rows in a seeded table (words: lower-cased, split on
whitespace; a word's id is its CRC-32 modulo the table size); a (query, document) pair's logit is the
dot product of their mean vectors, times 4. The folder may hold `hashing.json` with `dimension`,
`max_length`, `prompts` and `default_prompt`.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedserve.models.backend import NO_OUTPUTS, BackendEntry, BatchCost, CpuDefaults, register
from embedserve.models.errors import InvalidInput
from embedserve.models.spec import ModelSpec
from embedserve.models.types import ModelInfo, Tokens, TokenSpan

VOCAB = 4096
CLS, SEP = 1, 2  # around every text, as BERT's tokenizer puts [CLS] and [SEP]


def _settings(source: str) -> dict[str, Any]:
    path = Path(source) / "hashing.json"
    return json.loads(path.read_text()) if path.is_file() else {}


class HashingTokenizer:
    """Words as token ids: lower-cased, split on whitespace, a word's id its CRC-32 modulo the table."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    @staticmethod
    def word_ids(text: str) -> list[int]:
        return [3 + zlib.crc32(word.encode()) % (VOCAB - 3) for word in text.lower().split()]

    def _bounded(self, ids: list[int], truncate: bool, index: int) -> tuple[list[int], bool]:
        room = self.max_length - 2
        if len(ids) > room and not truncate:
            raise InvalidInput(
                f"input[{index}] is longer than the model's limit of {self.max_length} tokens and truncation is off",
                param="input",
            )
        return ids[:room], len(ids) > room

    def encode(self, texts: Sequence[str], *, prompt: str = "", truncate: bool = True) -> list[Tokens]:
        out = []
        for i, text in enumerate(texts):
            ids, cut = self._bounded(self.word_ids(prompt + text), truncate, i)
            out.append(Tokens([CLS, *ids, SEP], None, cut))
        return out

    def encode_ids(self, sequences: Sequence[Sequence[int]], *, truncate: bool = True) -> list[Tokens]:
        out = []
        for i, content in enumerate(sequences):
            if any(not 0 <= t < VOCAB for t in content):
                raise InvalidInput(f"input[{i}] holds a token id outside [0, {VOCAB})", param="input")
            kept, cut = self._bounded(list(content), truncate, i)
            out.append(Tokens([CLS, *kept, SEP], None, cut))
        return out

    def encode_pairs(self, query: str, documents: Sequence[str], *, truncate: bool = True) -> list[Tokens]:
        q = self.word_ids(query)
        out = []
        for i, document in enumerate(documents):
            d = self.word_ids(document)
            room = self.max_length - 3
            cut = len(q) + len(d) > room
            if cut and not truncate:
                raise InvalidInput(f"documents[{i}] with the query is longer than the model's limit", param="documents")
            kept_q = q[: max(1, room - min(len(d), room // 2))]
            kept_d = d[: room - len(kept_q)]
            ids = [CLS, *kept_q, SEP, *kept_d, SEP]
            types = [0] * (len(kept_q) + 2) + [1] * (len(kept_d) + 1)
            out.append(Tokens(ids, types, cut))
        return out

    def describe(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[list[TokenSpan]]:
        spans = []
        for text in texts:
            row, at = [], 0
            for word in text.split():
                start = text.index(word, at)
                at = start + len(word)
                row.append(TokenSpan(self.word_ids(word)[0], word, False, start, at))
            ends = ([TokenSpan(CLS, "[CLS]", True, None, None)], [TokenSpan(SEP, "[SEP]", True, None, None)])
            spans.append([*ends[0], *row, *ends[1]] if add_special_tokens else row)
        return spans

    def decode(self, sequences: Sequence[Sequence[int]], *, skip_special_tokens: bool = True) -> list[str]:
        raise InvalidInput("a hashing tokenizer's ids cannot be turned back into words", param="ids")


class _HashingRunner:
    cost: BatchCost = "tokens"  # it computes on each item's own tokens
    cpu = CpuDefaults(batch_tokens=4096, workers=1)
    outputs = NO_OUTPUTS

    def __init__(self, spec: ModelSpec, source: str, *, dimension: int) -> None:
        settings = _settings(source)
        self.max_length = min(x for x in (spec.max_length, settings.get("max_length", 128)) if x)
        self.tokenizer = HashingTokenizer(self.max_length)
        self.dimension = int(settings.get("dimension", dimension))
        self.table = np.random.default_rng(0).standard_normal((VOCAB, self.dimension)).astype(np.float32)
        self.settings = settings
        self.batches: list[int] = []
        """The size of every batch run, for tests of batching."""

    def _info(self, spec: ModelSpec, dimension: int, normalized: bool) -> ModelInfo:
        return ModelInfo(
            id=spec.id,
            kind=spec.kind,
            width=dimension,
            max_length=self.max_length,
            backend=spec.backend,
            device="cpu",
            dtype="float32",
            normalized=normalized,
            prompts={**self.settings.get("prompts", {}), **spec.prompts},
            default_prompt=spec.default_prompt or self.settings.get("default_prompt"),
        )

    def _mean(self, ids: Sequence[int]) -> np.ndarray:
        content = [i for i in ids if i > SEP]
        return self.table[content].mean(axis=0) if content else np.zeros(self.dimension, dtype=np.float32)

    def warm(self, *, max_batch_tokens: int, max_batch_size: int) -> None:
        return None

    def close(self) -> None:
        self.table = np.zeros((0, self.dimension), dtype=np.float32)


class HashingEmbeddingRunner(_HashingRunner):
    def __init__(self, spec: ModelSpec, source: str) -> None:
        super().__init__(spec, source, dimension=32)
        self.info = self._info(spec, self.dimension, normalized=True)

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        self.batches.append(len(batch))
        return np.stack([self._mean(item.ids) for item in batch]).astype(np.float32)


class HashingRerankRunner(_HashingRunner):
    def __init__(self, spec: ModelSpec, source: str) -> None:
        super().__init__(spec, source, dimension=32)
        self.info = self._info(spec, 1, normalized=False)

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        self.batches.append(len(batch))
        logits = []
        for item in batch:
            types = item.type_ids or [0] * len(item.ids)
            query = [i for i, t in zip(item.ids, types) if t == 0]
            document = [i for i, t in zip(item.ids, types) if t == 1]
            logits.append(4.0 * float(self._mean(query) @ self._mean(document)) / self.dimension)
        return np.asarray(logits, dtype=np.float32)


ENTRY = register(
    BackendEntry(
        "hashing",
        ("numpy",),
        "core",
        {
            "embed": "tests.hashing_backend:HashingEmbeddingRunner",
            "rerank": "tests.hashing_backend:HashingRerankRunner",
        },
    )
)
