"""Late chunking: one document's chunks encoded together as one text, each chunk's vector the mean of its own
tokens' vectors, then the model's layers after pooling (EmbeddingGemma's Dense). The reference is computed from
the token embeddings of the joined text (the runner's TOKENS output, what /embed_all serves)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedserve.models.backend import CHUNKS, TOKENS
from embedserve.models.embedder import Embedder
from embedserve.models.errors import InvalidInput
from embedserve.models.loading import load_model
from embedserve.models.spec import ModelSpec

CHUNKS_OF_ONE_TEXT = [
    "Berlin is the capital of Germany.",
    "It has about 3.8 million inhabitants,",
    "and the city is known for its museums and parks.",
]


@pytest.fixture(scope="module")
def gemma(tiny_gemma3_dir: Path) -> Embedder:
    """EmbeddingGemma's shape: mean pooling, then two Dense layers."""
    model = load_model(ModelSpec(backend="torch", id="gemma", source=str(tiny_gemma3_dir), device="cpu")).model
    assert isinstance(model, Embedder)
    return model


def reference(model: Embedder, chunks: list[str], dense: list[np.ndarray] | None = None) -> np.ndarray:
    """Each chunk's span in the joined text's tokens, and the mean of the joined text's token vectors over it."""
    (joined,) = model.tokenize([" ".join(chunks)], prompt_name=None)
    (hidden,) = model.runner.outputs[TOKENS]([joined])
    item = model.tokenize_chunks(chunks)
    assert item.ids == joined.ids  # the chunks, tokenized alone, are the joined text's tokens here
    means = np.stack([hidden[start:stop].mean(axis=0) for start, stop in item.spans])
    for weight in dense or []:
        means = means @ weight.T
    return means


def test_each_chunk_is_the_mean_of_its_own_tokens_in_the_whole_text(bge_m3: Embedder) -> None:
    item = bge_m3.tokenize_chunks(CHUNKS_OF_ONE_TEXT)
    (got,) = bge_m3.runner.outputs[CHUNKS]([item])
    assert got.shape == (3, bge_m3.info.width)
    np.testing.assert_allclose(got, reference(bge_m3, CHUNKS_OF_ONE_TEXT), atol=1e-5)
    alone = bge_m3.runner.run(bge_m3.tokenize(CHUNKS_OF_ONE_TEXT))
    assert not np.allclose(got, alone, atol=1e-3)  # the context changed them: not chunks embedded alone


def test_layers_after_pooling_apply_to_each_chunk(gemma: Embedder) -> None:
    dense = [module.linear.weight.detach().numpy() for module in gemma.runner._modules[2:]]
    assert len(dense) == 2
    item = gemma.tokenize_chunks(CHUNKS_OF_ONE_TEXT)
    (got,) = gemma.runner.outputs[CHUNKS]([item, gemma.tokenize_chunks(["another, longer document " * 5])])[:1]
    np.testing.assert_allclose(got, reference(gemma, CHUNKS_OF_ONE_TEXT, dense), atol=1e-5)


def test_spans_lie_end_to_end_after_the_prompt_inside_the_special_tokens(bge_m3: Embedder, gemma: Embedder) -> None:
    item = bge_m3.tokenize_chunks(["one two", "three"])
    (first_start, first_stop), (second_start, second_stop) = item.spans
    assert first_start == 1 and first_stop == second_start and second_stop == len(item.ids) - 1
    query = gemma.prompt("query")
    assert query
    prompted = gemma.tokenize_chunks(["one two", "three"], prompt_name="query")
    plain = gemma.tokenize_chunks(["one two", "three"], prompt_name="document")
    shift = prompted.spans[0][0] - plain.spans[0][0]
    assert shift > 0 and prompted.ids[prompted.spans[0][0] :] == plain.ids[plain.spans[0][0] :]


def test_past_the_limit_or_an_empty_chunk_is_refused_naming_why(bge_m3: Embedder) -> None:
    limit = bge_m3.info.max_length
    with pytest.raises(InvalidInput, match=f"limit of {limit} tokens"):
        bge_m3.tokenize_chunks(["word " * (limit // 2), "word " * (limit // 2)])
    with pytest.raises(InvalidInput, match=f"limit of {limit} tokens"):
        bge_m3.tokenize_chunks(["x" * (limit * 40)])  # refused before tokenizing
    with pytest.raises(InvalidInput, match=r"input\[1\] has no tokens"):
        bge_m3.tokenize_chunks(["fine", ""])


def test_onnx_pools_chunks_as_torch_does(
    gemma: Embedder, tiny_gemma3_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from embedserve.quantize.export import export_model

    out = export_model(tiny_gemma3_dir, tmp_path_factory.mktemp("gemma-onnx"), kind="embed")
    onnx = load_model(ModelSpec(id="gemma", source=str(out), backend="onnx")).model
    item = gemma.tokenize_chunks(CHUNKS_OF_ONE_TEXT, prompt_name="document")
    assert onnx.tokenize_chunks(CHUNKS_OF_ONE_TEXT, prompt_name="document") == item
    (want,) = gemma.runner.outputs[CHUNKS]([item])
    (got,) = onnx.runner.outputs[CHUNKS]([item])
    np.testing.assert_allclose(got, want, atol=1e-4)
