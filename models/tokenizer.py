"""Tokenization with the model's own fast tokenizer, driven directly (no HF `__call__` overhead).

Items are tokenized one request at a time, unpadded, so the batcher knows each item's exact
length; padding happens once per batch in `pad`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from models.errors import InvalidInput
from models.runner import Tokens


class TextTokenizer:
    def __init__(
        self,
        backend: Tokenizer,
        *,
        max_length: int,
        pad_id: int,
        vocab_size: int,
        with_type_ids: bool,
    ) -> None:
        # A private copy: the model's own tokenizer object may carry padding settings.
        self._tok = Tokenizer.from_str(backend.to_str())
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)
        self.max_length = max_length
        self.pad_id = pad_id
        self.vocab_size = vocab_size
        self.with_type_ids = with_type_ids
        self._prefix, self._suffix = self._special_tokens_around_content()

    def _special_tokens_around_content(self) -> tuple[list[int], list[int]]:
        """The ids the post-processor puts before and after a single text's content."""
        probe = "hello"
        content = self._tok.encode(probe, add_special_tokens=False).ids
        full = self._tok.encode(probe).ids
        for start in range(len(full) - len(content) + 1):
            if full[start : start + len(content)] == content:
                return full[:start], full[start + len(content) :]
        return [], []

    def encode(self, texts: Sequence[str], *, prompt: str = "", truncate: bool = True) -> list[Tokens]:
        """Tokenizes `prompt + text` for each text, as sentence-transformers does with prompts."""
        if prompt:
            texts = [prompt + text for text in texts]
        encodings = self._tok.encode_batch(list(texts)) if len(texts) > 1 else [self._tok.encode(texts[0])]
        out: list[Tokens] = []
        for i, enc in enumerate(encodings):
            truncated = bool(enc.overflowing)
            if truncated and not truncate:
                raise InvalidInput(
                    f"input[{i}] is longer than the model's limit of {self.max_length} tokens and truncation is off",
                    param="input",
                )
            out.append(Tokens(enc.ids, enc.type_ids if self.with_type_ids else None, truncated))
        return out

    def encode_ids(self, sequences: Sequence[Sequence[int]], *, truncate: bool = True) -> list[Tokens]:
        """Token-id inputs are the content; the model's special tokens are added around them."""
        room = self.max_length - len(self._prefix) - len(self._suffix)
        out: list[Tokens] = []
        for i, ids in enumerate(sequences):
            bad = next((t for t in ids if t < 0 or t >= self.vocab_size), None)
            if bad is not None:
                raise InvalidInput(
                    f"input[{i}] holds token id {bad}, outside the vocabulary [0, {self.vocab_size})",
                    param="input",
                )
            truncated = len(ids) > room
            if truncated and not truncate:
                raise InvalidInput(
                    f"input[{i}] is longer than the model's limit of {self.max_length} tokens and truncation is off",
                    param="input",
                )
            full = [*self._prefix, *ids[:room], *self._suffix]
            out.append(Tokens(full, [0] * len(full) if self.with_type_ids else None, truncated))
        return out

    def pad(self, batch: Sequence[Tokens]) -> dict[str, np.ndarray]:
        """Right-pads a batch to its longest item: input_ids, attention_mask (and token_type_ids)."""
        width = max(len(t) for t in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        types = np.zeros((len(batch), width), dtype=np.int64) if self.with_type_ids else None
        for row, item in enumerate(batch):
            n = len(item.ids)
            ids[row, :n] = item.ids
            mask[row, :n] = 1
            if types is not None and item.type_ids is not None:
                types[row, :n] = item.type_ids
        features = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            features["token_type_ids"] = types
        return features
