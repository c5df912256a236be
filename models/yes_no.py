"""LLM rerankers: a causal language model asked whether a document answers a query, scored by how much more it
expects "yes" than "no" as its next token (Qwen3-Reranker; bge-reranker-v2-gemma asks the same way).

This module is the one home of what such a model is asked: its templates, by name, and the tokenizer that writes a
(query, document) pair into one. The runners (models.torch_yes_no) read the next-token logits of "yes" and "no" at
the last position and give `logit(yes) - logit(no)` as the pair's one raw score: its sigmoid is the softmax over
[no, yes] that the model cards compute (models.reranker.relevance).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from embedserve.models.errors import InputTooLong, InvalidInput
from embedserve.models.tokenizer import CHARS_PER_TOKEN_BOUND, Inspection, bounded_text
from embedserve.models.types import Tokens


@dataclass(frozen=True, slots=True)
class YesNoTemplate:
    """How a pair is put to the model: `prefix`, then `pair` filled in, then `suffix`; the model's next token is
    its answer."""

    name: str
    prefix: str
    pair: str
    """With `{instruction}`, `{query}` and `{document}`."""
    suffix: str
    instruction: str
    """The task when a request names none."""
    max_length: int
    """The pair's token limit the model card uses, when the operator sets none (capped by the model's positions)."""
    model_types: tuple[str, ...] = ()
    """The transformers `model_type`s this template is the default for."""
    yes: str = "yes"
    no: str = "no"


QWEN3_RERANKER = YesNoTemplate(
    name="qwen3-reranker",
    prefix="<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n',
    pair="<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
    suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    instruction="Given a web search query, retrieve relevant passages that answer the query",
    max_length=8192,
    model_types=("qwen3",),
)
"""Qwen3-Reranker's model card, word for word."""

TEMPLATES: dict[str, YesNoTemplate] = {t.name: t for t in (QWEN3_RERANKER,)}


def template_for(name: str | None, model_type: str) -> YesNoTemplate:
    """The template a spec names, or the default for the model's family; ValueError naming the choices otherwise."""
    if name is not None:
        try:
            return TEMPLATES[name]
        except KeyError:
            raise ValueError(f"unknown yes/no template {name!r}; known: {', '.join(TEMPLATES)}") from None
    for template in TEMPLATES.values():
        if model_type in template.model_types:
            return template
    raise ValueError(
        f"no yes/no template is known for {model_type!r} causal LMs: name one with `template:` ({', '.join(TEMPLATES)})"
    )


def is_causal_lm(folder: str | Path) -> bool:
    """Whether a local folder holds a causal language model (its config.json's architecture is `*ForCausalLM`)
    that is not a sentence-transformers embedder (Qwen3-Embedding's folders say ForCausalLM too, beside their
    modules.json). False for a hub id: nothing local to read."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    architectures = config.get("architectures") if isinstance(config, dict) else None
    causal = any(str(name).endswith("ForCausalLM") for name in architectures or [])
    return causal and not (folder / "modules.json").is_file()


class YesNoTokenizer(Inspection):
    """(query, document) pairs written into the template, tokenized as the model cards do: the filled-in pair is
    tokenized as one text (with the tokenizer's own special tokens), cut at its end to leave room for the prefix and
    suffix, then put between their tokens. Batches are padded on the LEFT, so every item's last token is the last
    position, as the cards pad."""

    def __init__(self, backend: Tokenizer, template: YesNoTemplate, *, max_length: int, pad_id: int) -> None:
        self._tok = Tokenizer.from_str(backend.to_str())  # a private copy: the model's may carry padding settings
        self._tok.no_padding()
        self._tok.no_truncation()
        self.template = template
        self.pad_id = pad_id
        self._prefix = self._tok.encode(template.prefix, add_special_tokens=False).ids
        self._suffix = self._tok.encode(template.suffix, add_special_tokens=False).ids
        self.room = max_length - len(self._prefix) - len(self._suffix)
        if self.room < 8:
            raise ValueError(f"max_length {max_length} leaves no room for a pair inside the {template.name} template")
        self.max_length = max_length
        self.answer_ids = tuple(self._answer_id(word) for word in (template.no, template.yes))
        """The token ids of "no" and "yes", in that order."""

    def _answer_id(self, word: str) -> int:
        token = self._tok.token_to_id(word)
        if token is None:
            raise ValueError(f"the tokenizer has no {word!r} token, which the {self.template.name} template scores")
        return token

    def encode_pairs(
        self,
        query: str,
        documents: Sequence[str],
        *,
        truncate: bool = True,
        param: str = "documents",
        instruction: str | None = None,
    ) -> list[Tokens]:
        template = self.template
        task = template.instruction if instruction is None else instruction
        texts = [template.pair.format(instruction=task, query=query, document=d) for d in documents]
        limit = self.room * CHARS_PER_TOKEN_BOUND
        encodings = self._tok.encode_batch([bounded_text(text, limit) for text in texts])
        for i, text in enumerate(texts):
            if len(text) > limit and len(encodings[i].ids) <= self.room:  # the cut cost tokens: no cut
                encodings[i] = self._tok.encode_batch([text])[0]
        out = []
        for i, (text, enc) in enumerate(zip(texts, encodings)):
            ids = enc.ids
            truncated = len(ids) > self.room
            if truncated and not truncate:
                raise InputTooLong(
                    f"{param}[{i}] with the query and instruction is {'at least ' if len(text) > limit else ''}"
                    f"{len(ids) + len(self._prefix) + len(self._suffix)} tokens in the model's template, longer than "
                    f"its limit of {self.max_length} tokens, and truncation is off",
                    param=param,
                )
            out.append(Tokens([*self._prefix, *ids[: self.room], *self._suffix], None, truncated))
        return out

    def encode(self, texts: Sequence[str], *, prompt: str = "", truncate: bool = True) -> list[Tokens]:
        raise InvalidInput("an LLM reranker scores (query, document) pairs, not single texts", param="inputs")

    def pad(self, batch: Sequence[Tokens]) -> dict[str, np.ndarray]:
        """Left-padded input_ids and attention_mask: the last position is every item's last token."""
        width = max(len(t) for t in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, item in enumerate(batch):
            ids[row, width - len(item) :] = item.ids
            mask[row, width - len(item) :] = 1
        return {"input_ids": ids, "attention_mask": mask}
