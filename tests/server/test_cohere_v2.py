"""Cohere's v2 API, spoken to with cohere.ClientV2 as its users do: /v2/embed (embeddings by type,
input types mapped to the model's prompts) and /v2/rerank, answered as the other shapes answer."""

from __future__ import annotations

import base64

import numpy as np
import pytest

cohere = pytest.importorskip("cohere")

from embedserve.models.texts import SENTENCES  # noqa: E402
from tests.inprocess import AppServer  # noqa: E402

TEXTS = ["How do embeddings work?", "Библиотека открыта до восьми.", "짧은 문장", "a longer passage " * 30]
QUERY = "Where do students find answers?"
DOCUMENTS = ["The library is open late.", "Bananas are yellow.", "Students ask librarians for help."]


@pytest.fixture(scope="module")
def served(several_models: AppServer) -> AppServer:
    return several_models


@pytest.fixture(scope="module")
def client(served: AppServer):  # type: ignore[no-untyped-def]
    return cohere.ClientV2(api_key="unused", base_url=served.url, httpx_client=served.http, max_retries=0)


def openai_vectors(served: AppServer, model: str, texts: list[str], **extra: object) -> np.ndarray:
    body = served.http.post("/v1/embeddings", json={"model": model, "input": texts, **extra}).json()
    return np.array([row["embedding"] for row in body["data"]], dtype=np.float32)


def test_embed_by_type_answers_every_type_from_the_same_vectors(client, served: AppServer) -> None:  # type: ignore[no-untyped-def]
    from sentence_transformers.util.quantization import quantize_embeddings

    answer = client.embed(
        model="all-MiniLM-L6-v2",
        input_type="search_document",
        texts=TEXTS,
        embedding_types=["float", "base64", "binary", "ubinary", "int8", "uint8"],
    )
    floats = np.array(answer.embeddings.float_, dtype=np.float32)
    np.testing.assert_allclose(floats, openai_vectors(served, "all-MiniLM-L6-v2", TEXTS), atol=1e-6)
    assert answer.texts == TEXTS and answer.meta.billed_units.input_tokens > len(TEXTS)
    assert answer.id and answer.response_type == "embeddings_by_type"
    decoded = np.frombuffer(base64.b64decode(answer.embeddings.base64[1]), dtype="<f4")
    np.testing.assert_array_equal(decoded, floats[1])
    for kind in ("binary", "ubinary"):
        got = np.array(getattr(answer.embeddings, kind))
        assert got.shape == (4, 48)
        np.testing.assert_array_equal(got, quantize_embeddings(floats, precision=kind))
    # int8/uint8: scaled by the ranges of the model's own embeddings of the calibration sentences.
    calibration = openai_vectors(served, "all-MiniLM-L6-v2", list(SENTENCES))
    ranges = np.stack([calibration.min(axis=0), calibration.max(axis=0)])
    for kind in ("int8", "uint8"):
        got = np.array(getattr(answer.embeddings, kind))
        want = quantize_embeddings(floats, precision=kind, ranges=ranges).astype(np.int16)
        assert np.abs(got - want).max() <= 1  # a float's last bits may fall on either side of a step
        assert (got == want).mean() > 0.99


def test_input_types_pick_the_models_prompts(client, served: AppServer) -> None:  # type: ignore[no-untyped-def]
    for input_type, prompt in [
        ("search_query", "query"),
        ("search_document", "document"),
        ("clustering", "Clustering"),
    ]:
        got = client.embed(model="gemma", input_type=input_type, texts=TEXTS[:2], embedding_types=["float"])
        want = openai_vectors(served, "gemma", TEXTS[:2], prompt_name=prompt)
        np.testing.assert_allclose(np.array(got.embeddings.float_), want, atol=1e-6)
    # MiniLM has no prompts: the input type changes nothing.
    plain = client.embed(
        model="all-MiniLM-L6-v2", input_type="search_query", texts=TEXTS[:1], embedding_types=["float"]
    )
    np.testing.assert_allclose(
        plain.embeddings.float_, openai_vectors(served, "all-MiniLM-L6-v2", TEXTS[:1]), atol=1e-6
    )


def test_output_dimension_and_inputs_objects(client) -> None:  # type: ignore[no-untyped-def]
    answer = client.embed(
        model="all-MiniLM-L6-v2",
        input_type="search_query",
        inputs=[{"content": [{"type": "text", "text": "hello world"}]}],
        embedding_types=["float"],
        output_dimension=64,
    )
    vector = np.array(answer.embeddings.float_[0])
    assert vector.shape == (64,) and abs(np.linalg.norm(vector) - 1) < 1e-5


def test_rerank_scores_as_the_v1_route_best_first(client, served: AppServer) -> None:  # type: ignore[no-untyped-def]
    answer = client.rerank(model="rr", query=QUERY, documents=DOCUMENTS, top_n=2)
    v1 = served.http.post("/v1/rerank", json={"model": "rr", "query": QUERY, "documents": DOCUMENTS}).json()
    assert [(r.index, round(r.relevance_score, 6)) for r in answer.results] == [
        (r["index"], round(r["relevance_score"], 6)) for r in v1["results"][:2]
    ]
    assert answer.meta.billed_units.search_units == 1


def test_errors_reach_the_client_as_cohere_errors(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(cohere.errors.NotFoundError) as missing:
        client.embed(model="embed-v4.0", input_type="search_query", texts=["x"], embedding_types=["float"])
    assert "'embed-v4.0' is not served" in missing.value.body["message"]
    with pytest.raises(cohere.errors.BadRequestError) as unsupported:
        client.embed(model="all-MiniLM-L6-v2", input_type="search_query", texts=["x"], truncate="START")
    assert unsupported.value.body["message"] == "truncate START is not supported: use END (the default) or NONE"
    with pytest.raises(cohere.errors.BadRequestError) as too_long:
        client.embed(model="all-MiniLM-L6-v2", input_type="search_query", texts=["word " * 600], truncate="NONE")
    assert "truncat" in too_long.value.body["message"]
    with pytest.raises(cohere.errors.NotFoundError):
        client.rerank(model="all-MiniLM-L6-v2", query=QUERY, documents=DOCUMENTS)


def test_the_same_types_on_the_openai_and_native_routes(served: AppServer) -> None:
    from sentence_transformers.util.quantization import quantize_embeddings

    floats = openai_vectors(served, "all-MiniLM-L6-v2", TEXTS)
    want = quantize_embeddings(floats, precision="ubinary").tolist()
    body = {"model": "all-MiniLM-L6-v2", "embedding_type": "ubinary"}
    v1 = served.http.post("/v1/embeddings", json={**body, "input": TEXTS}).json()
    assert [row["embedding"] for row in v1["data"]] == want
    assert served.http.post("/batch-embed", json={**body, "texts": TEXTS}).json()["embeddings"] == want
    one = served.http.post("/embed", json={**body, "text": TEXTS[0]}).json()
    assert one["embedding"] == want[0] and one["dim"] == 384
    assert served.http.post("/embed", json={**body, "inputs": TEXTS}).json() == want  # TEI's body
    int8 = served.http.post(
        "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "embedding_type": "int8", "input": TEXTS}
    ).json()
    v2 = served.http.post(
        "/v2/embed", json={"model": "all-MiniLM-L6-v2", "texts": TEXTS, "embedding_types": ["int8"]}
    ).json()
    assert [row["embedding"] for row in int8["data"]] == v2["embeddings"]["int8"]
    both = served.http.post("/v1/embeddings", json={**body, "input": TEXTS, "encoding_format": "base64"})
    assert both.status_code == 400 and both.json()["error"]["param"] == "embedding_type"
