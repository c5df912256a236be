"""Tokenization with the model's own fast tokenizer, driven directly (no HF `__call__` overhead).

Items are tokenized one request at a time, unpadded, so the batcher knows each item's exact
length; padding happens once per batch in `pad`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from embedserve.models.errors import InputTooLong, InvalidInput
from embedserve.models.types import Tokens, TokenSpan

CHARS_PER_TOKEN_BOUND = 32
"""Texts longer than this many characters per token of the model's limit are cut before tokenizing.

Tokenizers encode a whole text before truncating it: 10 MB of text is ~12 s of CPU for 256 tokens.
No real tokenizer spends 32 characters per token, so the cut keeps every token the model sees; a
text that gets too few tokens from its cut (long runs of whitespace) is tokenized whole instead.
"""


def bounded_text(text: str, chars: int, *, keep_end: bool = False) -> str:
    """At most `chars` characters of `text` (its end with `keep_end`), cut at a space where one is near."""
    if len(text) <= chars:
        return text
    if keep_end:
        piece = text[-chars:]
        space = piece.find(" ")
        return piece[space + 1 :] if 0 <= space < chars // 2 else piece
    piece = text[:chars]
    space = piece.rfind(" ")
    return piece[:space] if space >= chars // 2 else piece


def _joined(prompt: str, chunks: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """`prompt` and `chunks` as one text, a space added between two pieces where neither side has whitespace,
    and each chunk's [start, stop) characters in it."""
    text, bounds = prompt, []
    for chunk in chunks:
        if text and chunk and not text[-1].isspace() and not chunk[0].isspace():
            text += " "
        bounds.append((len(text), len(text) + len(chunk)))
        text += chunk
    return text, bounds


class Inspection:
    """What TEI's /tokenize and /decode show of a model's tokenizer (`self._tok`): shared by every tokenizer kind
    (here, and models.yes_no's)."""

    _tok: Tokenizer

    def describe(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[list[TokenSpan]]:
        """Each text's tokens with the characters they cover, as the tokenizer splits it (an embedder's
        tokenizer cuts at the model's token limit, as the model would see the text)."""
        spans = []
        for text, enc in zip(texts, self._tok.encode_batch(list(texts), add_special_tokens=add_special_tokens)):
            row = []
            for token_id, token, special, (start, stop) in zip(
                enc.ids, enc.tokens, enc.special_tokens_mask, enc.offsets
            ):
                if special:
                    row.append(TokenSpan(token_id, token, True, None, None))
                else:
                    row.append(TokenSpan(token_id, text[start:stop], False, start, stop))
            spans.append(row)
        return spans

    def decode(self, sequences: Sequence[Sequence[int]], *, skip_special_tokens: bool = True) -> list[str]:
        """Texts back from token ids (InvalidInput for an id outside the vocabulary)."""
        size = self._tok.get_vocab_size(with_added_tokens=True)
        for i, ids in enumerate(sequences):
            bad = next((t for t in ids if not 0 <= t < size), None)
            if bad is not None:
                raise InvalidInput(f"ids[{i}] holds token id {bad}, outside the vocabulary [0, {size})", param="ids")
        return self._tok.decode_batch([list(ids) for ids in sequences], skip_special_tokens=skip_special_tokens)


class TextTokenizer(Inspection):
    def __init__(
        self,
        backend: Tokenizer,
        *,
        max_length: int,
        pad_id: int,
        vocab_size: int,
        with_type_ids: bool,
        copy: bool = True,
    ) -> None:
        # A private copy: the model's own tokenizer object may carry padding settings. A caller that
        # loaded `backend` for this tokenizer alone passes copy=False and saves a second vocabulary
        # in memory (~13 MB for a 30k WordPiece one).
        self._tok = Tokenizer.from_str(backend.to_str()) if copy else backend
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
        limit = self.max_length * CHARS_PER_TOKEN_BOUND
        # encode_batch even for one text: it releases the GIL (encode holds it), so a long text
        # tokenized in a worker thread does not stall the event loop.
        encodings = self._tok.encode_batch([bounded_text(text, limit) for text in texts])
        for i, text in enumerate(texts):
            if len(text) > limit and not encodings[i].overflowing:  # the cut may have cost tokens: no cut
                encodings[i] = self._tok.encode_batch([text])[0]
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

    def encode_chunks(self, chunks: Sequence[str], *, prompt: str = "") -> Tokens:
        """Late chunking's one item: the prompt and the chunks of one document joined into one text (a space
        between two chunks unless one side already has whitespace), tokenized once as any text is; `spans` says
        which tokens are each chunk's (a token belongs to the chunk its characters start in, or that follows
        them). Never truncated (a cut would lose whole chunks): past the model's limit, InvalidInput naming it."""
        text, bounds = _joined(prompt, chunks)
        if len(text) > self.max_length * CHARS_PER_TOKEN_BOUND:  # surely past the limit: not worth tokenizing
            raise InvalidInput(
                f"late chunking encodes the inputs as one text, and {len(text)} characters are past the model's "
                f"limit of {self.max_length} tokens; send fewer or shorter chunks",
                param="input",
            )
        (enc,) = self._tok.encode_batch([text])
        if enc.overflowing:
            raise InvalidInput(
                f"late chunking encodes the inputs as one text, longer than the model's limit of {self.max_length} "
                "tokens; send fewer or shorter chunks",
                param="input",
            )
        first: list[int | None] = [None] * len(bounds)
        last = [0] * len(bounds)
        chunk = 0
        for position, ((begin, _), special) in enumerate(zip(enc.offsets, enc.special_tokens_mask)):
            if special or begin < bounds[0][0] and text[begin : bounds[0][0]].strip():
                continue  # a special token, or the prompt's
            while chunk < len(bounds) - 1 and begin >= bounds[chunk][1]:
                chunk += 1
            if first[chunk] is None:
                first[chunk] = position
            last[chunk] = position + 1
        spans = []
        for i, start in enumerate(first):
            if start is None:
                raise InvalidInput(f"input[{i}] has no tokens: each chunk needs at least one", param="input")
            spans.append((start, last[i]))
        return Tokens(enc.ids, enc.type_ids if self.with_type_ids else None, spans=tuple(spans))

    def pad(self, batch: Sequence[Tokens], width: int | None = None) -> dict[str, np.ndarray]:
        """Right-pads a batch to its longest item, or to `width` (a compiled model's length bucket):
        input_ids, attention_mask (and token_type_ids)."""
        longest = max(len(t) for t in batch)
        if width is None:
            width = longest
        elif width < longest:
            raise ValueError(f"cannot pad a batch with a {longest}-token item to {width} tokens")
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


class PairTokenizer(Inspection):
    """(query, document) pairs for cross-encoders, tokenized as the model's tokenizer encodes a pair
    (its post-processor's pair template, `longest_first` truncation to `max_length`, the tokenizer's
    truncation side), which is what `tokenizer(pairs, truncation=True)` and CrossEncoder do.

    The tokenizers library truncates a pair only after building every overflowing window of it (and,
    when both texts overflow, every combination of their windows), which grows with the product of
    the two lengths: an 8k-token query with a 280k-token document takes ~50 s. So the query and the
    documents are encoded here without truncation or special tokens (the query once per request),
    cut with the library's `longest_first` arithmetic, and joined with the pair template, which is
    read off the tokenizer once by encoding a probe pair.
    """

    _PROBES = (("hello", "world"), ("a b c d", "e"))

    def __init__(
        self,
        backend: Tokenizer,
        *,
        max_length: int,
        pad_id: int,
        with_type_ids: bool,
        truncation_side: str = "right",
        copy: bool = True,
    ) -> None:
        if truncation_side not in ("left", "right"):
            raise ValueError(f"truncation_side must be 'left' or 'right', not {truncation_side!r}")
        self._tok = Tokenizer.from_str(backend.to_str()) if copy else backend  # see TextTokenizer
        self._tok.no_padding()
        self._tok.no_truncation()
        self.max_length = max_length
        self.pad_id = pad_id
        self.with_type_ids = with_type_ids
        self.truncation_side = truncation_side
        self._single: TextTokenizer | None = None
        self._layout = self._pair_template()
        self.num_special_tokens = sum(len(part[0]) for part in self._layout[:3])
        if max_length < self.num_special_tokens + 2:
            raise ValueError(
                f"max_length {max_length} leaves no room for a pair next to {self.num_special_tokens} special tokens"
            )

    def _pair_template(self) -> tuple[Any, ...]:
        """Where the post-processor puts its special tokens around and between the two texts, and
        the type ids it gives each part; checked against a second probe pair of other lengths."""
        probes = []
        for first, second in self._PROBES:
            full = self._tok.encode(first, second)
            a = self._tok.encode(first, add_special_tokens=False).ids
            b = self._tok.encode(second, add_special_tokens=False).ids
            probes.append((full.ids, full.type_ids, a, b))
        ids, types, a, b = probes[0]
        for i in range(len(ids) - len(a) + 1):
            if ids[i : i + len(a)] != a:
                continue
            for j in range(i + len(a), len(ids) - len(b) + 1):
                if ids[j : j + len(b)] != b:
                    continue
                first_types, second_types = set(types[i : i + len(a)]), set(types[j : j + len(b)])
                if len(first_types) != 1 or len(second_types) != 1:
                    continue
                layout = (
                    (ids[:i], types[:i]),
                    (ids[i + len(a) : j], types[i + len(a) : j]),
                    (ids[j + len(b) :], types[j + len(b) :]),
                    first_types.pop(),
                    second_types.pop(),
                )
                if all(self._join(a2, b2, layout) == (ids2, types2) for ids2, types2, a2, b2 in probes[1:]):
                    return layout
        raise ValueError("cannot read the pair template off this tokenizer's post-processor")

    @staticmethod
    def _join(a: Sequence[int], b: Sequence[int], layout: tuple[Any, ...]) -> tuple[list[int], list[int]]:
        (prefix, prefix_types), (middle, middle_types), (suffix, suffix_types), first_type, second_type = layout
        ids = [*prefix, *a, *middle, *b, *suffix]
        types = [*prefix_types, *[first_type] * len(a), *middle_types, *[second_type] * len(b), *suffix_types]
        return ids, types

    def _kept_lengths(self, n1: int, n2: int) -> tuple[int, int]:
        """The tokenizers library's `longest_first` pair truncation (utils/truncation.rs), on lengths."""
        budget = self.max_length - self.num_special_tokens
        if n1 + n2 <= budget:
            return n1, n2
        swap = n1 > n2
        if swap:
            n1, n2 = n2, n1
        n2 = n1 if n1 > budget else max(n1, budget - n1)
        if n1 + n2 > budget:
            n1 = budget // 2
            n2 = n1 + budget % 2
        return (n2, n1) if swap else (n1, n2)

    def _cut(self, ids: list[int], keep: int) -> list[int]:
        if keep >= len(ids):
            return ids
        return ids[len(ids) - keep :] if self.truncation_side == "left" else ids[:keep]

    def encode_pairs(
        self, query: str, documents: Sequence[str], *, truncate: bool = True, param: str = "documents"
    ) -> list[Tokens]:
        """One `Tokens` per (query, document) pair, special tokens included, truncated to `max_length`."""
        if not documents:
            return []
        texts = [query, *documents]
        limit = self.max_length * CHARS_PER_TOKEN_BOUND
        keep_end = self.truncation_side == "left"
        encoded = [
            enc.ids
            for enc in self._tok.encode_batch(
                [bounded_text(t, limit, keep_end=keep_end) for t in texts], add_special_tokens=False
            )
        ]
        # A cut text still longer than the limit truncates exactly as the whole text would
        # (`longest_first` treats every length past the budget alike); otherwise, no cut.
        for i, text in enumerate(texts):
            if len(text) > limit and len(encoded[i]) <= self.max_length:
                encoded[i] = self._tok.encode_batch([text], add_special_tokens=False)[0].ids
        q, docs = encoded[0], encoded[1:]
        cut = [len(t) > limit for t in texts]
        out: list[Tokens] = []
        for i, d in enumerate(docs):
            k1, k2 = self._kept_lengths(len(q), len(d))
            truncated = k1 < len(q) or k2 < len(d)
            if truncated and not truncate:
                raise InputTooLong(
                    f"{param}[{i}] with the query is {'at least ' if cut[0] or cut[i + 1] else ''}"
                    f"{len(q) + len(d) + self.num_special_tokens} tokens, longer "
                    f"than the model's limit of {self.max_length} tokens, and truncation is off",
                    param=param,
                )
            ids, types = self._join(self._cut(q, k1), self._cut(d, k2), self._layout)
            out.append(Tokens(ids, types if self.with_type_ids else None, truncated))
        return out

    def encode(self, texts: Sequence[str], *, prompt: str = "", truncate: bool = True) -> list[Tokens]:
        """Single texts, for a sequence classifier (its tokenizer made on first use: rerankers never need it)."""
        if self._single is None:
            self._single = TextTokenizer(
                self._tok,
                max_length=self.max_length,
                pad_id=self.pad_id,
                vocab_size=self._tok.get_vocab_size(with_added_tokens=True),
                with_type_ids=self.with_type_ids,
            )
        return self._single.encode(texts, prompt=prompt, truncate=truncate)

    # Padding is the same as for single texts: it needs only pad_id and with_type_ids.
    pad = TextTokenizer.pad
