"""Running an exported folder with onnxruntime, tokenized the way the server tokenizes.

Verification and the accuracy report go through this, so they measure what a server serving
the folder would return: the saved tokenizer.json and embedserve.json settings, embedserve's own
tokenizers (`models.tokenizer`), and the numpy pipeline of `quantize.pipeline`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from models.exported import read_config
from models.tokenizer import PairTokenizer, TextTokenizer
from quantize.pipeline import finish, load_pipeline


def session(path: Path, *, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class ExportedModel:
    """One graph of an exported folder (`model.onnx` or `model_int8.onnx`)."""

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
        feeds = {k: v for k, v in arrays.items() if k in self.input_names}
        return self.session.run(None, feeds)[0]

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        assert self.texts is not None, "not an embedder"
        return self.texts.pad(self.texts.encode(texts))

    def tokenize_pairs(self, pairs: Sequence[tuple[str, str]]) -> dict[str, np.ndarray]:
        assert self.pairs is not None, "not a reranker"
        return self.pairs.pad([t for q, d in pairs for t in self.pairs.encode_pairs(q, [d])])

    def batches(self, items: Sequence[Any], *, batch_size: int = 32) -> list[dict[str, np.ndarray]]:
        """Padded model inputs for texts (embedders) or (query, document) pairs (rerankers)."""
        tokenize = self.tokenize if self.pairs is None else self.tokenize_pairs
        return [tokenize(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]

    def hidden(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """last_hidden_state [batch, seq, hidden] for padded arrays."""
        return self._run(arrays)

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """Sentence embeddings, as the folder's pipeline defines them."""
        assert self.pipeline is not None, "not an embedder"
        pipeline = self.pipeline
        return np.concatenate(
            [finish(self._run(a), a["attention_mask"], pipeline) for a in self.batches(texts, batch_size=batch_size)]
        )

    def score(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32) -> np.ndarray:
        """Raw logits [n, num_labels] for (query, document) pairs."""
        assert self.pairs is not None, "not a reranker"
        return np.concatenate([self._run(a) for a in self.batches(pairs, batch_size=batch_size)]).astype(np.float32)

    def outputs(self, items: Sequence[Any], *, batch_size: int = 32) -> np.ndarray:
        """What accuracy is judged on: sentence embeddings, or logits."""
        return (
            self.embed(items, batch_size=batch_size) if self.pairs is None else self.score(items, batch_size=batch_size)
        )
