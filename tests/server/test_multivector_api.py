"""Jina's POST /v1/multi-vector: bge-m3's ColBERT rows per text, in Jina's shape, from a folder with
colbert_linear.pt; a clear 400 in OpenAI's shape from a model without one. And bge-m3 named as a reranker:
late interaction (MaxSim), or FlagEmbedding's hybrid of dense, sparse and multi-vector scores."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.inprocess import AppServer, start_app
from tests.models.test_multivector import flag_embedding_colbert

MAX_ROWS = 64  # per-token rows one request may ask for, here
TEXTS = ["Where do students find answers?", "The library finds the answer to your question quickly.", "short"]


@pytest.fixture(scope="module")
def colbert_server(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_bge_m3_dir: Path,
    tiny_bert_dir: Path,
    tiny_bert_reranker_dir: Path,
    tiny_gemma3_dir: Path,
) -> Iterator[AppServer]:
    import torch

    folder = tmp_path_factory.mktemp("multi-vector")
    models_file = folder / "models.yaml"
    # A model with query and document prompts and a ColBERT head (read whatever the family).
    gemma = shutil.copytree(tiny_gemma3_dir, folder / "gemma-colbert")
    torch.manual_seed(0)
    torch.save(torch.nn.Linear(64, 16).state_dict(), gemma / "colbert_linear.pt")
    entries = [
        {"id": "bge-m3", "source": str(tiny_bge_m3_dir)},
        {"id": "gemma-colbert", "source": str(gemma)},
        {"id": "e5-tiny", "source": str(tiny_bert_dir)},
        {"id": "ms-marco-tiny", "source": str(tiny_bert_reranker_dir), "kind": "rerank"},
    ]
    models_file.write_text(yaml.safe_dump({"models": entries}))
    running = start_app(folder, "--models", str(models_file), env={"EMBEDSERVE_MAX_TOKEN_VECTORS": str(MAX_ROWS)})
    yield running
    running.stop()


def test_each_text_gets_its_colbert_rows_in_jinas_shape(colbert_server: AppServer, tiny_bge_m3_dir: Path) -> None:
    response = colbert_server.http.post("/v1/multi-vector", json={"model": "bge-m3", "input": TEXTS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "bge-m3" and body["object"] == "list"
    expected = flag_embedding_colbert(tiny_bge_m3_dir, TEXTS, 512)
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and {d["object"] for d in body["data"]} == {"embeddings"}
    for data, reference in zip(body["data"], expected):
        np.testing.assert_allclose(np.array(data["embeddings"]), reference, atol=1e-5)
    assert body["usage"]["total_tokens"] == sum(len(r) + 1 for r in expected)  # the first token counts, unreturned


def test_base64_rows_are_little_endian_float32(colbert_server: AppServer) -> None:
    plain = colbert_server.http.post("/v1/multi-vector", json={"model": "bge-m3", "input": TEXTS[2]}).json()
    packed = colbert_server.http.post(
        "/v1/multi-vector", json={"model": "bge-m3", "input": TEXTS[2], "embedding_type": "base64"}
    ).json()
    rows = [np.frombuffer(base64.b64decode(row), dtype="<f4") for row in packed["data"][0]["embeddings"]]
    np.testing.assert_allclose(rows, plain["data"][0]["embeddings"], atol=1e-7)


def test_a_model_without_a_colbert_head_and_a_width_it_lacks_are_400s(colbert_server: AppServer) -> None:
    without = colbert_server.http.post("/v1/multi-vector", json={"model": "e5-tiny", "input": "x"})
    assert without.status_code == 400
    assert without.json()["error"]["param"] == "model" and "multi-vector" in without.json()["error"]["message"]
    narrower = colbert_server.http.post("/v1/multi-vector", json={"model": "bge-m3", "input": "x", "dimensions": 8})
    assert narrower.status_code == 400 and narrower.json()["error"]["param"] == "dimensions"
    assert "32 dimensions only" in narrower.json()["error"]["message"]
    # Refused from the head's declared width, before any work: not even tokenized (else this would be a 413).
    long = {"model": "bge-m3", "input": "a long sentence about libraries " * 20, "dimensions": 8}
    assert colbert_server.http.post("/v1/multi-vector", json=long).json()["error"]["param"] == "dimensions"
    unknown = colbert_server.http.post("/v1/multi-vector", json={"model": "nope", "input": "x"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


QUERY = "Where do students find answers?"
DOCUMENTS = ["The library finds the answer to your question quickly.", "Студенты быстро находят ответ.", "short"]


def reference_scores(folder: Path, weights: tuple[float, float, float] | None = None) -> np.ndarray:
    """FlagEmbedding's compute_score from the formulas, each text encoded alone: MaxSim over the ColBERT rows,
    or (with weights) the weighted mean of dense cosine, lexical match and MaxSim."""
    from sentence_transformers import SentenceTransformer

    from tests.models.test_sparse import flag_embedding_weights

    texts = [QUERY, *DOCUMENTS]
    rows = flag_embedding_colbert(folder, texts, 512)
    colbert = np.array([np.mean([max(float(q @ d) for d in rows[i]) for q in rows[0]]) for i in range(1, len(texts))])
    if weights is None:
        return colbert
    dense = SentenceTransformer(str(folder), device="cpu").encode(texts, normalize_embeddings=True)
    lexical = flag_embedding_weights(folder, texts, 512)
    sparse = np.array([sum(w * lexical[i].get(t, 0.0) for t, w in lexical[0].items()) for i in range(1, len(texts))])
    w_dense, w_sparse, w_colbert = weights
    return (w_dense * (dense[1:] @ dense[0]) + w_sparse * sparse + w_colbert * colbert) / sum(weights)


def _scores(results: list[dict], key: str) -> np.ndarray:
    return np.array([r[key] for r in sorted(results, key=lambda r: r["index"])])


def test_bge_m3_named_as_a_reranker_scores_by_maxsim_on_every_rerank_shape(
    colbert_server: AppServer, tiny_bge_m3_dir: Path
) -> None:
    want = reference_scores(tiny_bge_m3_dir)
    cohere = colbert_server.http.post("/v1/rerank", json={"model": "bge-m3", "query": QUERY, "documents": DOCUMENTS})
    assert cohere.status_code == 200, cohere.text
    results = cohere.json()["results"]
    np.testing.assert_allclose(_scores(results, "relevance_score"), want, atol=1e-5)
    assert [r["index"] for r in results] == list(np.argsort(-want, kind="stable"))
    tei = colbert_server.http.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS}, headers={"X-Model": "bge-m3"})
    np.testing.assert_allclose(_scores(tei.json(), "score"), want, atol=1e-5)
    v2 = colbert_server.http.post("/v2/rerank", json={"model": "bge-m3", "query": QUERY, "documents": DOCUMENTS})
    np.testing.assert_allclose(_scores(v2.json()["results"], "relevance_score"), want, atol=1e-5)


@pytest.mark.parametrize("weights", [None, [1.0, 0.5, 0.0]])
def test_hybrid_mode_is_flag_embeddings_weighted_mean_of_the_three_scores(
    colbert_server: AppServer, tiny_bge_m3_dir: Path, weights: list[float] | None
) -> None:
    body = {"model": "bge-m3", "query": QUERY, "documents": DOCUMENTS, "mode": "hybrid"}
    response = colbert_server.http.post("/v1/rerank", json={**body, **({"weights": weights} if weights else {})})
    assert response.status_code == 200, response.text
    want = reference_scores(tiny_bge_m3_dir, tuple(weights or (0.4, 0.2, 0.4)))  # type: ignore[arg-type]
    np.testing.assert_allclose(_scores(response.json()["results"], "relevance_score"), want, atol=1e-5)


def test_the_query_gets_the_query_prompt_and_the_documents_the_document_prompt(colbert_server: AppServer) -> None:
    def rows(input_type: str, texts: list[str]) -> list[np.ndarray]:
        body = {"model": "gemma-colbert", "input": texts, "input_type": input_type}
        return [
            np.array(d["embeddings"]) for d in colbert_server.http.post("/v1/multi-vector", json=body).json()["data"]
        ]

    (query,) = rows("query", [QUERY])
    documents = [rows("document", [document])[0] for document in DOCUMENTS]  # one a request: under MAX_ROWS
    want = [float(np.mean((query @ document.T).max(axis=1))) for document in documents]
    response = colbert_server.http.post(
        "/v1/rerank", json={"model": "gemma-colbert", "query": QUERY, "documents": DOCUMENTS, "prompt_name": "query"}
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(_scores(response.json()["results"], "relevance_score"), want, atol=1e-5)


def test_what_cannot_rerank_so_is_refused_naming_why(colbert_server: AppServer) -> None:
    plain = colbert_server.http.post("/v1/rerank", json={"model": "e5-tiny", "query": "q", "documents": ["d"]})
    assert plain.status_code == 404 and "embed" in plain.json()["error"]["message"]  # not a reranker, as before
    mode = colbert_server.http.post(
        "/v1/rerank", json={"model": "ms-marco-tiny", "query": "q", "documents": ["d"], "mode": "hybrid"}
    )
    assert mode.status_code == 400 and mode.json()["error"]["param"] == "mode"
    zero = colbert_server.http.post(
        "/v1/rerank",
        json={"model": "bge-m3", "query": "q", "documents": ["d"], "mode": "hybrid", "weights": [0, 0, 0]},
    )
    assert zero.status_code == 400 and zero.json()["error"]["param"] == "weights"


def test_an_answer_of_more_rows_than_the_bound_is_a_413_and_the_server_serves_on(colbert_server: AppServer) -> None:
    long = "a long sentence about libraries " * 20  # ~100 tokens: more rows than MAX_ROWS
    refused = colbert_server.http.post("/v1/multi-vector", json={"model": "bge-m3", "input": [long]})
    assert refused.status_code == 413 and f"the limit is {MAX_ROWS}" in refused.json()["error"]["message"]
    tei = colbert_server.http.post("/embed_all", json={"inputs": [long]}, headers={"X-Model": "bge-m3"})
    assert tei.status_code == 413 and f"the limit is {MAX_ROWS}" in tei.json()["error"]
    assert colbert_server.http.post("/v1/multi-vector", json={"model": "bge-m3", "input": TEXTS}).status_code == 200
