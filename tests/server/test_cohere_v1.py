"""Cohere's v1 embed, spoken to with cohere.Client as its users (and langchain_cohere's CohereEmbeddings) do:
POST /v1/embed answers float vectors (`embeddings_floats`), or embeddings keyed by type when
`embedding_types` is given (`embeddings_by_type`), the same vectors /v2/embed answers; errors in Cohere's
`{"id", "message"}` shape, which the client raises as its own errors."""

from __future__ import annotations

import numpy as np
import pytest

cohere = pytest.importorskip("cohere")

from tests.inprocess import AppServer  # noqa: E402

TEXTS = ["How do embeddings work?", "Библиотека открыта до восьми.", "짧은 문장", "a longer passage " * 30]


@pytest.fixture(scope="module")
def served(several_models: AppServer) -> AppServer:
    return several_models


@pytest.fixture(scope="module")
def client(served: AppServer):  # type: ignore[no-untyped-def]
    return cohere.Client(api_key="unused", base_url=served.url, httpx_client=served.http, max_retries=0)


def v2(served: AppServer, model: str, texts: list[str], **extra: object) -> dict:
    response = served.http.post("/v2/embed", json={"model": model, "texts": texts, **extra})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("model", "input_type"),
    [("gemma", "search_query"), ("gemma", "search_document"), ("gemma", "clustering"), ("all-MiniLM-L6-v2", None)],
)
def test_floats_are_v2s_for_the_same_texts_and_input_type(client, served: AppServer, model, input_type) -> None:  # type: ignore[no-untyped-def]
    extra = {"input_type": input_type} if input_type else {}
    answer = client.embed(model=model, texts=TEXTS, **extra)
    assert isinstance(answer, cohere.EmbeddingsFloatsEmbedResponse)
    assert answer.response_type == "embeddings_floats" and answer.id and answer.texts == TEXTS
    want = v2(served, model, TEXTS, **extra)
    np.testing.assert_allclose(np.array(answer.embeddings), np.array(want["embeddings"]["float"]), atol=1e-6)
    assert answer.meta.api_version.version == "1"
    assert answer.meta.billed_units.input_tokens == want["meta"]["billed_units"]["input_tokens"] > len(TEXTS)


def test_the_input_type_picks_the_models_prompt(client) -> None:  # type: ignore[no-untyped-def]
    query, document, plain = (
        np.array(client.embed(model="gemma", texts=TEXTS[:2], **extra).embeddings)
        for extra in ({"input_type": "search_query"}, {"input_type": "search_document"}, {})
    )
    assert not np.allclose(query, document, atol=1e-3) and not np.allclose(query, plain, atol=1e-3)


def test_the_body_on_the_wire_is_v1s(served: AppServer) -> None:
    floats = served.http.post("/v1/embed", json={"model": "all-MiniLM-L6-v2", "texts": TEXTS[:2]}).json()
    assert set(floats) == {"id", "embeddings", "texts", "meta", "response_type"}
    assert floats["response_type"] == "embeddings_floats" and np.array(floats["embeddings"]).shape == (2, 384)
    assert floats["meta"]["api_version"] == {"version": "1"}
    by_type = served.http.post(
        "/v1/embed", json={"model": "all-MiniLM-L6-v2", "texts": TEXTS[:2], "embedding_types": ["float"]}
    ).json()
    assert set(by_type) == {"id", "embeddings", "texts", "meta", "response_type"}
    assert by_type["response_type"] == "embeddings_by_type" and set(by_type["embeddings"]) == {"float"}
    np.testing.assert_allclose(by_type["embeddings"]["float"], floats["embeddings"], atol=1e-6)
    # langchain_cohere's CohereEmbeddings sends truncate null (tests/server/test_client_venvs.py): END, the default.
    null = served.http.post("/v1/embed", json={"model": "all-MiniLM-L6-v2", "texts": TEXTS[:2], "truncate": None})
    assert null.status_code == 200, null.text
    np.testing.assert_allclose(null.json()["embeddings"], floats["embeddings"], atol=1e-6)


def test_embedding_types_answer_by_type_as_v2_does(client, served: AppServer) -> None:  # type: ignore[no-untyped-def]
    answer = client.embed(
        model="all-MiniLM-L6-v2", input_type="search_document", texts=TEXTS, embedding_types=["binary", "int8"]
    )
    assert isinstance(answer, cohere.EmbeddingsByTypeEmbedResponse)
    assert answer.response_type == "embeddings_by_type" and answer.texts == TEXTS
    assert answer.embeddings.float_ is None and answer.embeddings.ubinary is None
    types = ["int8", "binary"]
    want = v2(served, "all-MiniLM-L6-v2", TEXTS, input_type="search_document", embedding_types=types)["embeddings"]
    assert answer.embeddings.int8 == want["int8"] and answer.embeddings.binary == want["binary"]
    assert np.array(answer.embeddings.int8).shape == (4, 384) and np.array(answer.embeddings.binary).shape == (4, 48)
    assert np.abs(np.array(answer.embeddings.int8)).max() <= 128


def test_the_client_splits_more_than_96_texts_and_merges_the_answers(client, served: AppServer) -> None:  # type: ignore[no-untyped-def]
    texts = [f"sentence number {i}" for i in range(100)]
    answer = client.embed(model="all-MiniLM-L6-v2", input_type="search_query", texts=texts)
    assert answer.id.count(", ") == 1  # two requests, their ids joined
    assert answer.texts == texts and len(answer.embeddings) == 100
    want = v2(served, "all-MiniLM-L6-v2", texts[-4:], input_type="search_query")["embeddings"]["float"]
    np.testing.assert_allclose(answer.embeddings[-4:], want, atol=1e-6)


def test_errors_reach_the_client_as_cohere_errors(client, served: AppServer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(cohere.errors.BadRequestError) as bad_type:
        client.embed(model="all-MiniLM-L6-v2", input_type="search_everything", texts=["x"])
    assert set(bad_type.value.body) == {"id", "message"} and bad_type.value.body["id"]
    assert bad_type.value.body["message"].startswith("'input_type': Input should be")
    with pytest.raises(cohere.errors.NotFoundError) as missing:
        client.embed(model="embed-english-v3.0", input_type="search_query", texts=["x"])
    assert set(missing.value.body) == {"id", "message"}
    assert "'embed-english-v3.0' is not served" in missing.value.body["message"]
    with pytest.raises(cohere.errors.BadRequestError) as image:
        client.embed(model="all-MiniLM-L6-v2", input_type="image", texts=["x"])
    assert image.value.body["message"] == "image inputs are not supported: this server embeds text"
    with pytest.raises(cohere.errors.BadRequestError) as images:
        client.embed(model="all-MiniLM-L6-v2", images=["data:image/png;base64,AAAA"])
    assert images.value.body["message"].startswith("'texts'")  # v1 posts no texts beside images
    with pytest.raises(cohere.errors.BadRequestError) as start:
        client.embed(model="all-MiniLM-L6-v2", texts=["x"], truncate="START")
    assert start.value.body["message"] == "truncate START is not supported: use END (the default) or NONE"
    with pytest.raises(cohere.errors.BadRequestError) as too_long:
        client.embed(model="all-MiniLM-L6-v2", texts=["word " * 600], truncate="NONE")
    assert "truncat" in too_long.value.body["message"]
    both = served.http.post("/v1/embed", json={"texts": ["x"], "images": ["data:,"], "model": "all-MiniLM-L6-v2"})
    assert both.status_code == 400 and set(both.json()) == {"id", "message"}
    assert both.json()["message"] == "image inputs are not supported: this server embeds text"
    # OpenAI's /v1 routes keep OpenAI's shape.
    openai = served.http.post("/v1/embeddings", json={"model": "embed-english-v3.0", "input": "x"})
    assert openai.status_code == 404 and set(openai.json()) == {"error"}
