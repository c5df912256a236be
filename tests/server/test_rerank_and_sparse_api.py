"""Reranking over HTTP (Cohere/Jina's /v1/rerank, TEI's /rerank) and bge-m3's sparse weights (/embed_sparse),
beside embedding models in one server."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.fixtures.tiny_models import SAMPLE_TEXTS
from tests.inprocess import AppServer, start_app
from tests.support import cosine_rows

QUERY = "Where do students find answers?"
DOCUMENTS = [*SAMPLE_TEXTS.values(), "short", "a much longer document about libraries " * 80, "Студенты"]
MAX_DOCUMENTS = 40


@pytest.fixture(scope="module")
def rerank_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dirs, tiny_bert_reranker_dir: Path, tiny_bge_m3_dir: Path
) -> Iterator[AppServer]:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("rerank")
    models_file = folder / "models.yaml"
    entries = [
        {"id": "gemma", "source": str(tiny_model_dirs.gemma3)},
        {"id": "e5-tiny", "source": str(tiny_model_dirs.bert)},
        {"id": "bge-reranker", "source": str(tiny_model_dirs.reranker), "kind": "rerank", "aliases": ["bge"]},
        {"id": "bge-m3", "source": str(tiny_bge_m3_dir)},
    ]
    models_file.write_text(yaml.safe_dump({"models": entries}))
    # The second reranker comes from a --model flag: its kind is read off the folder.
    running = start_app(
        folder,
        "--models",
        str(models_file),
        "--model",
        f"ms-marco-tiny={tiny_bert_reranker_dir}",
        env={"EMBEDSERVE_MAX_DOCUMENTS": str(MAX_DOCUMENTS)},
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def cross_encoders(tiny_model_dirs, tiny_bert_reranker_dir: Path):  # type: ignore[no-untyped-def]
    from sentence_transformers import CrossEncoder

    return {
        "bge-reranker": CrossEncoder(str(tiny_model_dirs.reranker), device="cpu"),
        "ms-marco-tiny": CrossEncoder(str(tiny_bert_reranker_dir), device="cpu"),
    }


def expected_scores(cross_encoder, query: str, documents: list[str], *, raw: bool = False) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch

    logits = cross_encoder.predict([(query, d) for d in documents], activation_fn=torch.nn.Identity())
    return logits if raw else 1 / (1 + np.exp(-logits))


def post(server: AppServer, route: str, body: dict) -> httpx.Response:
    return server.http.post(f"{server.url}{route}", json=body, timeout=60)


@pytest.mark.parametrize("model", ["bge-reranker", "ms-marco-tiny"])
def test_v1_rerank_equals_cross_encoder_predict_best_first(
    rerank_server: AppServer, cross_encoders, model: str
) -> None:  # type: ignore[no-untyped-def]
    response = post(rerank_server, "/v1/rerank", {"model": model, "query": QUERY, "documents": DOCUMENTS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model and body["object"] == "rerank"
    results = body["results"]
    expected = expected_scores(cross_encoders[model], QUERY, DOCUMENTS)
    assert [r["index"] for r in results] == list(np.argsort(-expected, kind="stable"))
    got = np.array([r["relevance_score"] for r in sorted(results, key=lambda r: r["index"])])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert all(0 <= r["relevance_score"] <= 1 and "document" not in r for r in results)
    assert body["usage"]["total_tokens"] > len(DOCUMENTS)
    assert response.headers["x-request-id"] == body["id"]


def test_top_n_return_documents_and_document_objects(rerank_server: AppServer) -> None:
    documents = [{"text": d} for d in DOCUMENTS]
    full = post(rerank_server, "/v1/rerank", {"model": "bge", "query": QUERY, "documents": DOCUMENTS}).json()
    top = post(
        rerank_server,
        "/v1/rerank",
        {"model": "bge", "query": QUERY, "documents": documents, "top_n": 2, "return_documents": True},
    ).json()
    assert top["model"] == "bge-reranker"  # an alias answers under the model's id
    assert [r["index"] for r in top["results"]] == [r["index"] for r in full["results"][:2]]
    assert [r["document"]["text"] for r in top["results"]] == [DOCUMENTS[r["index"]] for r in top["results"]]
    many = post(rerank_server, "/v1/rerank", {"model": "bge", "query": QUERY, "documents": DOCUMENTS, "top_n": 99})
    assert len(many.json()["results"]) == len(DOCUMENTS)


def test_tei_rerank_shape_raw_scores_and_return_text(rerank_server: AppServer, cross_encoders) -> None:  # type: ignore[no-untyped-def]
    body = {"model": "ms-marco-tiny", "query": QUERY, "texts": DOCUMENTS}
    ranks = post(rerank_server, "/rerank", body).json()
    assert set(ranks[0]) == {"index", "score"}
    raw = post(rerank_server, "/rerank", {**body, "raw_scores": True, "return_text": True}).json()
    expected = expected_scores(cross_encoders["ms-marco-tiny"], QUERY, DOCUMENTS, raw=True)
    got = np.array([r["score"] for r in sorted(raw, key=lambda r: r["index"])])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert [r["index"] for r in raw] == [r["index"] for r in ranks]  # the sigmoid keeps the order
    assert all(r["text"] == DOCUMENTS[r["index"]] for r in raw)


def test_models_are_listed_with_their_kind(rerank_server: AppServer) -> None:
    cards = {c["id"]: c for c in rerank_server.http.get(f"{rerank_server.url}/v1/models").json()["data"]}
    assert {cid: c["kind"] for cid, c in cards.items()} == {
        "gemma": "embed",
        "e5-tiny": "embed",
        "bge-m3": "embed",
        "bge-reranker": "rerank",
        "ms-marco-tiny": "rerank",
    }
    assert cards["bge-reranker"]["max_length"] == 512 and cards["bge-reranker"]["status"] == "loaded"
    assert cards["bge-m3"]["sparse"] is True and cards["e5-tiny"]["sparse"] is False


@pytest.mark.parametrize(
    ("route", "body", "status", "words"),
    [
        ("/v1/rerank", {"model": "nope", "query": "q", "documents": ["d"]}, 404, ["bge-reranker", "ms-marco-tiny"]),
        ("/v1/rerank", {"model": "gemma", "query": "q", "documents": ["d"]}, 404, ["is served for embed, not rerank"]),
        ("/v1/rerank", {"query": "q", "documents": ["d"]}, 400, ["name one of"]),
        ("/v1/rerank", {"model": "bge", "query": "q", "documents": []}, 400, ["documents"]),
        ("/v1/rerank", {"model": "bge", "query": "", "documents": ["d"]}, 400, ["query"]),
        ("/v1/rerank", {"model": "bge", "query": "q", "documents": [3]}, 400, ["documents"]),
        ("/v1/rerank", {"model": "bge", "query": "q", "documents": ["d"], "top_n": 0}, 400, ["top_n"]),
        ("/v1/rerank", {"model": "bge", "query": "q", "documents": ["d"] * (MAX_DOCUMENTS + 1)}, 413, ["limit"]),
        (
            "/v1/rerank",
            {"model": "bge", "query": "q", "documents": ["ok", "word " * 3000], "truncate": False},
            413,
            ["documents[1]", "truncation is off"],
        ),
        ("/v1/embeddings", {"model": "bge-reranker", "input": "x"}, 404, ["is served for rerank, not embed"]),
        ("/rerank", {"model": "bge", "query": "q", "texts": []}, 422, ["texts"]),
        ("/rerank", {"model": "bge", "query": "q", "texts": ["d"] * (MAX_DOCUMENTS + 1)}, 413, ["texts"]),
    ],
)
def test_bad_rerank_requests_get_the_routes_error_shape(
    rerank_server: AppServer, route: str, body: dict, status: int, words: list[str]
) -> None:
    response = post(rerank_server, route, body)
    assert response.status_code == status, response.text
    error = response.json()
    message = error["error"]["message"] if route.startswith("/v1/") else error["error"]
    assert all(word in message for word in words), message
    assert post(rerank_server, "/v1/rerank", {"model": "bge", "query": "q", "documents": ["d"]}).status_code == 200


async def test_embedders_and_rerankers_under_concurrent_load_answer_from_the_model_named(
    rerank_server: AppServer, tiny_model_dirs, cross_encoders
) -> None:  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    embedders = {
        "gemma": SentenceTransformer(str(tiny_model_dirs.gemma3), device="cpu"),
        "e5-tiny": SentenceTransformer(str(tiny_model_dirs.bert), device="cpu"),
    }
    rng = random.Random(4)
    jobs = []
    for i in range(90):
        model = rng.choice([*embedders, *cross_encoders])
        texts = rng.sample(DOCUMENTS, rng.randint(1, len(DOCUMENTS)))
        query = f"{QUERY} {i}"
        if model in embedders:
            expected = embedders[model].encode(texts, normalize_embeddings=True)
        else:
            expected = expected_scores(cross_encoders[model], query, texts)
        jobs.append((model, query, texts, expected))

    async with rerank_server.async_http(timeout=120) as client:

        async def one(model: str, query: str, texts: list[str], expected: np.ndarray) -> None:
            if model in embedders:
                response = await client.post("/v1/embeddings", json={"model": model, "input": texts})
                assert response.status_code == 200, response.text
                assert response.json()["model"] == model
                got = np.array([d["embedding"] for d in response.json()["data"]])
                assert cosine_rows(got, expected).min() >= 0.9999
            else:
                response = await client.post("/v1/rerank", json={"model": model, "query": query, "documents": texts})
                assert response.status_code == 200, response.text
                assert response.json()["model"] == model
                results = sorted(response.json()["results"], key=lambda r: r["index"])
                np.testing.assert_allclose([r["relevance_score"] for r in results], expected, atol=1e-4)

        await asyncio.gather(*(one(*job) for job in jobs))


def test_embed_sparse_gives_bge_m3s_lexical_weights_in_teis_shape(
    rerank_server: AppServer, tiny_bge_m3_dir: Path
) -> None:
    from tests.models.test_sparse import flag_embedding_weights

    texts = DOCUMENTS[:4]
    response = post(rerank_server, "/embed_sparse", {"model": "bge-m3", "inputs": texts})
    assert response.status_code == 200, response.text
    expected = flag_embedding_weights(tiny_bge_m3_dir, texts, 512)
    for got, reference in zip(response.json(), expected):
        assert [v["index"] for v in got] == sorted(reference)
        np.testing.assert_allclose([v["value"] for v in got], [reference[i] for i in sorted(reference)], atol=1e-5)
    (one,) = post(rerank_server, "/embed_sparse", {"model": "bge-m3", "inputs": texts[0]}).json()
    first = response.json()[0]
    assert [v["index"] for v in one] == [v["index"] for v in first]
    np.testing.assert_allclose([v["value"] for v in one], [v["value"] for v in first], atol=1e-5)
    # The dense route of the same model still answers.
    assert post(rerank_server, "/v1/embeddings", {"model": "bge-m3", "input": texts}).status_code == 200


def test_embed_sparse_on_a_model_without_a_sparse_head_is_a_400(rerank_server: AppServer) -> None:
    response = post(rerank_server, "/embed_sparse", {"model": "e5-tiny", "inputs": "x"})
    assert response.status_code == 400
    assert "no sparse head" in response.json()["error"]
