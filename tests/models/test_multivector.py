"""bge-m3's multi-vector (ColBERT) rows, computed the way FlagEmbedding's BGEM3FlagModel computes them (that the
head is found in the folder: tests/models/test_sparse.py, for both heads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedserve.models.backend import MULTIVECTOR
from embedserve.models.embedder import Embedder
from tests.fixtures.tiny_models import SAMPLE_TEXTS

TEXTS = [*SAMPLE_TEXTS.values(), "short", "a much longer sentence about libraries " * 40]


def flag_embedding_colbert(folder: Path, texts: list[str], max_length: int) -> list[np.ndarray]:
    """FlagEmbedding's recipe, one text at a time (no padding in the reference): colbert_linear over the last
    hidden state without its first token, each row L2-normalized."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    state = torch.load(folder / "colbert_linear.pt", weights_only=True)
    head = torch.nn.Linear(model.config.hidden_size, state["weight"].shape[0])
    head.load_state_dict(state)
    out = []
    for text in texts:
        batch = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            rows = head(model(**batch).last_hidden_state[:, 1:])
            out.append(torch.nn.functional.normalize(rows, dim=-1)[0].numpy())
    return out


def test_rows_equal_flag_embeddings_recipe_in_a_padded_batch(bge_m3: Embedder, tiny_bge_m3_dir: Path) -> None:
    tokens = bge_m3.tokenize(TEXTS)
    got = bge_m3.runner.outputs[MULTIVECTOR](tokens)
    expected = flag_embedding_colbert(tiny_bge_m3_dir, TEXTS, bge_m3.info.max_length)
    for rows, reference, item in zip(got, expected, tokens):
        assert rows.shape == reference.shape == (len(item) - 1, reference.shape[1])
        np.testing.assert_allclose(rows, reference, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
