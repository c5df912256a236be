"""One seam between the routes and whatever runs a model: a backend registered in models.backend
(here tests.hashing_backend, a real numpy embedder of one module and one registry entry) serves every
API shape, with no route knowing it exists, and the batcher budgets it as it declares."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from embedserve.models.backend import BACKENDS
from embedserve.models.preflight import problems
from embedserve.models.spec import ModelSpec
from tests.hashing_backend import ENTRY, HashingEmbeddingRunner
from tests.inprocess import AppServer, start_app


@pytest.fixture(scope="module")
def hashing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    folder = tmp_path_factory.mktemp("hashing")
    (folder / "hashing.json").write_text('{"dimension": 24, "prompts": {"query": "query: "}}')
    models = folder / "models.yaml"
    models.write_text(
        f"models:\n"
        f"  - {{id: words, source: {folder}, backend: hashing}}\n"
        f"  - {{id: pairs, source: {folder}, backend: hashing, kind: rerank}}\n"
    )
    running = start_app(None, "--models", str(models))
    yield running
    running.stop()


def expected(texts: list[str], prompt: str = "") -> np.ndarray:
    """What the hashing embedder gives, computed here without the server."""
    runner = HashingEmbeddingRunner(ModelSpec(id="x", source="/nonexistent", backend="hashing"), "/nonexistent")
    table = np.random.default_rng(0).standard_normal((4096, 24)).astype(np.float32)
    rows = np.stack([table[runner.tokenizer.word_ids(prompt + text)].mean(axis=0) for text in texts])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_a_registered_backend_is_a_backend_like_the_built_in_ones() -> None:
    assert BACKENDS["hashing"] is ENTRY and {"torch", "onnx", "onnx-int8"} <= set(BACKENDS)
    assert problems(ModelSpec(id="h", source="/no/such/folder/x", backend="hashing")) == [
        "model 'h': /no/such/folder/x does not exist"
    ]
    # Other test backends (tests.readme_backend) may be registered in the same run: hashing among them.
    with pytest.raises(
        ValueError, match=r"unknown backend 'tensorrt'; known: torch, onnx, onnx-int8, (\w+, )*hashing\b"
    ):
        ModelSpec(id="t", source="/x", backend="tensorrt")


def test_every_embedding_shape_serves_it(hashing: AppServer) -> None:
    texts = ["the quick brown fox", "jumps over the lazy dog"]
    want = expected(texts)
    openai = hashing.http.post("/v1/embeddings", json={"model": "words", "input": texts}).json()
    assert np.allclose([d["embedding"] for d in openai["data"]], want, atol=1e-6)
    assert openai["usage"]["prompt_tokens"] == 4 + 2 + 5 + 2  # words and [CLS]/[SEP] per text
    native = hashing.http.post("/batch-embed", json={"texts": texts}).json()
    assert native["dim"] == 24 and np.allclose(native["embeddings"], want, atol=1e-6)
    tei = hashing.http.post("/", json={"inputs": texts}, headers={"X-Model": "words"}).json()
    assert np.allclose(tei, want, atol=1e-6)
    cohere = hashing.http.post(
        "/v2/embed",
        json={"model": "words", "texts": texts[:1], "input_type": "search_query", "embedding_types": ["float"]},
    ).json()
    assert np.allclose(cohere["embeddings"]["float"], expected(texts[:1], "query: "), atol=1e-6)
    cohere_v1 = hashing.http.post(
        "/v1/embed", json={"model": "words", "texts": texts[:1], "input_type": "search_query"}
    ).json()
    assert np.allclose(cohere_v1["embeddings"], expected(texts[:1], "query: "), atol=1e-6)
    cut = hashing.http.post("/v1/embeddings", json={"model": "words", "input": texts, "dimensions": 8}).json()
    assert len(cut["data"][0]["embedding"]) == 8
    too_wide = hashing.http.post("/v1/embeddings", json={"model": "words", "input": "x", "dimensions": 25})
    assert too_wide.status_code == 400 and too_wide.json()["error"]["param"] == "dimensions"


def test_every_rerank_shape_serves_it(hashing: AppServer) -> None:
    documents = ["the quick brown fox", "an unrelated sentence about tea"]
    cohere = hashing.http.post(
        "/v1/rerank", json={"model": "pairs", "query": "quick brown fox", "documents": documents}
    ).json()
    assert [r["index"] for r in cohere["results"]] == [0, 1]
    tei = hashing.http.post("/rerank", json={"query": "quick brown fox", "texts": documents}).json()
    assert [r["index"] for r in tei] == [0, 1]
    assert tei[0]["score"] == pytest.approx(cohere["results"][0]["relevance_score"])


def test_a_backend_that_does_not_pad_is_budgeted_by_its_real_tokens(hashing: AppServer) -> None:
    served = hashing.app.state.host.get("words", "embed")
    assert served.batcher.padded is False and served.runner.cost == "tokens"
    no_sparse = hashing.http.post("/embed_sparse", json={"inputs": "x"}, headers={"X-Model": "words"})
    assert no_sparse.status_code == 400 and "no sparse head" in no_sparse.json()["error"]


def test_its_tokenizer_answers_teis_token_routes(hashing: AppServer) -> None:
    spans = hashing.http.post("/tokenize", json={"inputs": "Hello  there", "model": "words"}).json()[0]
    assert [(t["text"], t["start"], t["stop"], t["special"]) for t in spans] == [
        ("[CLS]", None, None, True), ("Hello", 0, 5, False), ("there", 7, 12, False), ("[SEP]", None, None, True),
    ]  # fmt: skip
    refused = hashing.http.post("/decode", json={"ids": [5], "model": "words"})
    assert refused.status_code == 400 and "cannot be turned back" in refused.json()["error"]
