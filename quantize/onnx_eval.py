"""Running an exported folder with onnxruntime, tokenized the way the server tokenizes.

Verification and the accuracy report go through this, so they measure what a server serving
the folder would return: the saved tokenizer.json and embedserve.json settings, embedserve's own
tokenizers (`models.tokenizer`), and the numpy pipeline of `quantize.pipeline`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from embedserve.models.exported import read_config
from embedserve.models.packed_rows import PackedPass, run_packed
from embedserve.models.tokenizer import PairTokenizer, TextTokenizer
from embedserve.quantize.pipeline import finish, load_pipeline

MAX_BATCH_TOKENS = 8192
"""Padded tokens per evaluation batch: a batch's activations (attention scores grow with its length squared)
stay in onnxruntime's arena for the session's life."""


def session(path: Path, *, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class ExportedModel:
    """One graph of an exported folder (`model.onnx`, `model_int8.onnx` or the packed `model_packed.onnx`, which is
    fed packed rows and answers for the padded batch as the others do)."""

    def __init__(self, folder: Path, file: str = "model.onnx", *, threads: int | None = None) -> None:
        self.folder = Path(folder)
        self.config = read_config(self.folder)
        self.pipeline = load_pipeline(self.folder, self.config)
        self.session = session(self.folder / file, threads=threads)
        self.input_names = {i.name for i in self.session.get_inputs()}
        backend = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        c = self.config
        if c["kind"] == "rerank":
            self.pairs: PairTokenizer | None = PairTokenizer(
                backend,
                max_length=c["max_length"],
                pad_id=c["pad_id"],
                with_type_ids=c["with_type_ids"],
                truncation_side=c["truncation_side"],
            )
            self.texts: TextTokenizer | None = None
        else:
            self.pairs = None
            self.texts = TextTokenizer(
                backend,
                max_length=c["max_length"],
                pad_id=c["pad_id"],
                vocab_size=c["vocab_size"],
                with_type_ids=c["with_type_ids"],
            )

    def _run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        if "segment_ids" in self.input_names:

            def forward(packed: PackedPass) -> np.ndarray:
                return self.session.run(None, {k: v for k, v in packed.feeds.items() if k in self.input_names})[0]

            return run_packed(arrays, int(self.config["pad_id"]), forward)
        feeds = {k: v for k, v in arrays.items() if k in self.input_names}
        return self.session.run(None, feeds)[0]

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        assert self.texts is not None, "not an embedder"
        return self.texts.pad(self.texts.encode(texts))

    def _sorted_batches(self, items: Sequence[Any], batch_size: int) -> tuple[list[int], list[dict[str, np.ndarray]]]:
        """Padded model inputs for texts (embedders) or (query, document) pairs (rerankers) in order of
        token length, at most `batch_size` items and MAX_BATCH_TOKENS padded tokens a batch, and that order.
        In the set's own order a long-context model padded a batch of 19 texts to 2048 tokens: gigabytes of
        attention scores, whose first allocation took 10 s of a 12 s evaluation."""
        if self.pairs is None:
            assert self.texts is not None
            tokens, pad = self.texts.encode(items), self.texts.pad
        else:
            tokens = [t for q, d in items for t in self.pairs.encode_pairs(q, [d])]
            pad = self.pairs.pad
        order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))
        groups: list[list[int]] = [[]]
        for i in order:
            group = groups[-1]
            if group and (len(group) == batch_size or len(tokens[i]) * (len(group) + 1) > MAX_BATCH_TOKENS):
                groups.append(group := [])
            group.append(i)
        return order, [pad([tokens[i] for i in group]) for group in groups if group]

    def batches(self, items: Sequence[Any], *, batch_size: int = 32) -> list[dict[str, np.ndarray]]:
        """Padded model inputs for texts or pairs, batched by length (calibration takes them as a set)."""
        return self._sorted_batches(items, batch_size)[1]

    def _in_order(
        self, items: Sequence[Any], batch_size: int, run: Callable[[dict[str, np.ndarray]], np.ndarray]
    ) -> np.ndarray:
        """`run` over the length-sorted batches, its rows put back in the items' order."""
        order, batches = self._sorted_batches(items, batch_size)
        rows = np.concatenate([run(a) for a in batches])
        out = np.empty_like(rows)
        out[order] = rows
        return out

    def hidden(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """last_hidden_state [batch, seq, hidden] for padded arrays."""
        return self._run(arrays)

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """Sentence embeddings, as the folder's pipeline defines them."""
        assert self.pipeline is not None, "not an embedder"
        pipeline = self.pipeline
        return self._in_order(texts, batch_size, lambda a: finish(self._run(a), a["attention_mask"], pipeline))

    def score(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32) -> np.ndarray:
        """Raw logits [n, num_labels] for (query, document) pairs."""
        assert self.pairs is not None, "not a reranker"
        return self._in_order(pairs, batch_size, self._run).astype(np.float32)

    def outputs(self, items: Sequence[Any], *, batch_size: int = 32) -> np.ndarray:
        """What accuracy is judged on: sentence embeddings, or logits."""
        return (
            self.embed(items, batch_size=batch_size) if self.pairs is None else self.score(items, batch_size=batch_size)
        )
