"""bge-m3's sparse lexical weights, computed the way FlagEmbedding's BGEM3FlagModel computes them."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from embedserve.models.backend import MULTIVECTOR, SPARSE
from embedserve.models.embedder import Embedder
from embedserve.models.loading import load_model
from embedserve.models.spec import ModelSpec
from tests.fixtures.tiny_models import SAMPLE_TEXTS

TEXTS = [*SAMPLE_TEXTS.values(), "short short short", "a much longer sentence about libraries " * 40]


def flag_embedding_weights(folder: Path, texts: list[str], max_length: int) -> list[dict[int, float]]:
    """FlagEmbedding's recipe: relu(sparse_linear(last_hidden_state)), then per text the largest weight
    of each token id, leaving out cls, eos, pad and unk and zero weights."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    head = torch.nn.Linear(model.config.hidden_size, 1)
    head.load_state_dict(torch.load(folder / "sparse_linear.pt", weights_only=True))
    unused = {tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}
    out = []
    for text in texts:  # one at a time: no padding in the reference
        batch = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            weights = torch.relu(head(model(**batch).last_hidden_state)).squeeze(-1)[0].numpy()
        result: dict[int, float] = defaultdict(float)
        for w, idx in zip(weights, batch["input_ids"][0].tolist()):
            if idx not in unused and w > 0 and w > result[idx]:
                result[idx] = float(w)
        out.append(dict(result))
    return out


@pytest.mark.parametrize("output", [SPARSE, MULTIVECTOR])
def test_each_head_is_found_in_the_folder(bge_m3: Embedder, tiny_xlmr_dir: Path, output: str) -> None:
    assert output in bge_m3.runner.outputs
    plain = load_model(ModelSpec(backend="torch", id="xlmr", source=str(tiny_xlmr_dir), device="cpu")).model
    assert output not in plain.runner.outputs


def test_weights_equal_flag_embeddings_recipe_in_a_padded_batch(bge_m3: Embedder, tiny_bge_m3_dir: Path) -> None:
    vectors = bge_m3.runner.outputs[SPARSE](bge_m3.tokenize(TEXTS))
    expected = flag_embedding_weights(tiny_bge_m3_dir, TEXTS, bge_m3.info.max_length)
    for vector, reference in zip(vectors, expected):
        assert vector.indices.tolist() == sorted(reference)
        np.testing.assert_allclose(vector.values, [reference[i] for i in sorted(reference)], atol=1e-5)
        assert (vector.values > 0).all()


def test_a_repeated_token_keeps_its_largest_weight_once(bge_m3: Embedder) -> None:
    (vector,) = bge_m3.runner.outputs[SPARSE](bge_m3.tokenize(["short short short"]))
    assert len(set(vector.indices.tolist())) == len(vector.indices)
