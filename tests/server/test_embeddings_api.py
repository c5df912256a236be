"""The OpenAI and native embedding routes, spoken to over HTTP like a client would."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from openai import OpenAI

from tests.inprocess import AppServer
from tests.support import cosine_rows, metric

MODEL = "all-MiniLM-L6-v2"
TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Une phrase en français, pour voir.",
    "한국어 문장도 임베딩합니다.",
    "Русский текст тоже работает.",
    " ".join(["a long passage about many things"] * 80),  # longer than the model's 256-token limit
]


@pytest.fixture(scope="module")
def client(server: AppServer) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, http_client=server.http)


@pytest.fixture(scope="module")
def reference(reference_model) -> np.ndarray:  # type: ignore[no-untyped-def]
    return reference_model.encode(TEXTS, normalize_embeddings=True)


def test_openai_client_float_embeddings_equal_sentence_transformers(client: OpenAI, reference: np.ndarray) -> None:
    response = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert response.model == MODEL
    assert [d.index for d in response.data] == list(range(len(TEXTS)))
    got = np.array([d.embedding for d in response.data])
    assert got.shape == (len(TEXTS), 384)
    assert cosine_rows(got, reference).min() >= 0.9999


def test_openai_client_base64_embeddings_decode_to_the_same_vectors(client: OpenAI, reference: np.ndarray) -> None:
    # The openai client asks for base64 by default and decodes it itself.
    response = client.embeddings.create(model=MODEL, input=TEXTS)
    got = np.array([d.embedding for d in response.data])
    assert cosine_rows(got, reference).min() >= 0.9999


def test_base64_is_little_endian_float32(server: AppServer) -> None:
    raw = server.http.post(f"{server.url}/v1/embeddings", json={"input": "hello", "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    floats = server.http.post(f"{server.url}/v1/embeddings", json={"input": "hello"}).json()["data"][0]["embedding"]
    assert vector.shape == (384,)
    np.testing.assert_allclose(vector, floats, rtol=1e-6, atol=1e-7)


def test_semantic_sanity(client: OpenAI) -> None:
    data = client.embeddings.create(model=MODEL, input=TEXTS[:3]).data
    eating, bread, baby = (np.array(d.embedding) for d in data)
    assert eating @ bread > eating @ baby + 0.3


def test_usage_counts_real_tokens_including_truncation(server: AppServer, reference_model) -> None:  # type: ignore[no-untyped-def]
    body = server.http.post(f"{server.url}/v1/embeddings", json={"input": TEXTS, "model": MODEL}).json()
    tokenizer = reference_model.tokenizer
    expected = sum(min(len(tokenizer(t)["input_ids"]), 256) for t in TEXTS)
    assert body["usage"] == {"prompt_tokens": expected, "total_tokens": expected}


def test_model_is_optional_and_aliases_resolve(server: AppServer) -> None:
    unnamed = server.http.post(f"{server.url}/v1/embeddings", json={"input": "hi"}).json()
    aliased = server.http.post(
        f"{server.url}/v1/embeddings", json={"input": "hi", "model": "sentence-transformers/all-MiniLM-L6-v2"}
    ).json()
    assert unnamed["model"] == aliased["model"] == MODEL
    assert unnamed["data"][0]["embedding"] == aliased["data"][0]["embedding"]


def test_token_id_inputs_embed_like_the_text_they_encode(server: AppServer, reference_model) -> None:  # type: ignore[no-untyped-def]
    ids = reference_model.tokenizer("A man is eating food.", add_special_tokens=False)["input_ids"]
    by_ids = server.http.post(f"{server.url}/v1/embeddings", json={"input": [ids, ids[:3]]}).json()
    by_text = server.http.post(f"{server.url}/v1/embeddings", json={"input": "A man is eating food."}).json()
    single = server.http.post(f"{server.url}/v1/embeddings", json={"input": ids}).json()
    assert len(by_ids["data"]) == 2 and len(single["data"]) == 1
    a, b = np.array(by_ids["data"][0]["embedding"]), np.array(by_text["data"][0]["embedding"])
    assert a @ b > 0.9999
    assert by_ids["usage"]["prompt_tokens"] == 2 * 2 + len(ids) + 3


def test_dimensions_truncate_then_renormalize(server: AppServer) -> None:
    full = np.array(
        server.http.post(f"{server.url}/v1/embeddings", json={"input": "hello"}).json()["data"][0]["embedding"]
    )
    short = np.array(
        server.http.post(f"{server.url}/v1/embeddings", json={"input": "hello", "dimensions": 64}).json()["data"][0][
            "embedding"
        ]
    )
    assert short.shape == (64,)
    assert np.linalg.norm(short) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(short, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)


def test_truncate_false_refuses_over_long_input(server: AppServer) -> None:
    response = server.http.post(f"{server.url}/v1/embeddings", json={"input": TEXTS[-1], "truncate": False})
    assert response.status_code == 400
    assert "256 tokens" in response.json()["error"]["message"]


def test_native_embed_and_batch_embed(server: AppServer, reference: np.ndarray) -> None:
    one = server.http.post(f"{server.url}/embed", json={"text": TEXTS[0]}).json()
    assert one["model"] == MODEL and one["dim"] == 384 and one["tokens"] > 0
    assert float(np.array(one["embedding"]) @ reference[0]) >= 0.9999

    many = server.http.post(f"{server.url}/batch-embed", json={"texts": TEXTS}).json()
    assert many["count"] == len(TEXTS) and many["dim"] == 384
    assert cosine_rows(np.array(many["embeddings"]), reference).min() >= 0.9999


def test_native_normalize_false_returns_the_raw_pooled_vector(server: AppServer, reference_model) -> None:  # type: ignore[no-untyped-def]
    raw = np.array(
        server.http.post(f"{server.url}/embed", json={"text": "hello", "normalize": False}).json()["embedding"]
    )
    expected = reference_model.encode(["hello"], normalize_embeddings=False)[0]
    # The folder's pipeline ends in Normalize; without it the vector keeps its pooled length.
    assert np.linalg.norm(raw) > 1.5
    assert float(raw @ expected / np.linalg.norm(raw) / np.linalg.norm(expected)) >= 0.9999


def test_models_health_and_request_ids(server: AppServer) -> None:
    models = server.http.get(f"{server.url}/v1/models").json()
    card = models["data"][0]
    assert models["object"] == "list"
    assert card["id"] == MODEL and card["kind"] == "embed" and card["dimension"] == 384
    assert card["max_length"] == 256 and card["backend"] == "onnx" and card["status"] == "loaded"

    assert server.http.get(f"{server.url}/health").json() == {"status": "ok"}
    assert server.http.get(f"{server.url}/health/ready").status_code == 200
    echoed = server.http.post(f"{server.url}/embed", json={"text": "x"}, headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"
    assert len(server.http.get(f"{server.url}/health").headers["x-request-id"]) == 32


def test_metrics_expose_requests_batches_and_queue(server: AppServer) -> None:
    server.http.post(f"{server.url}/v1/embeddings", json={"input": ["metrics", "please"]})
    text = server.http.get(f"{server.url}/metrics").text
    for name in (
        'embed_requests_total{model="all-MiniLM-L6-v2",route="/v1/embeddings",status="200"}',
        'embed_request_duration_seconds_bucket{le="0.001",model="all-MiniLM-L6-v2",route="/v1/embeddings"}',
        "embed_batch_size_bucket",
        "embed_batch_tokens_bucket",
        'embed_queue_items{model="all-MiniLM-L6-v2"}',
        'embed_tokens_total{model="all-MiniLM-L6-v2"}',
        "embed_model_memory_bytes",
        "embed_process_resident_bytes",
    ):
        assert name in text, name


def test_every_request_counts_once_in_its_model_route_and_status_series(server: AppServer) -> None:
    ok = {"model": MODEL, "route": "/v1/embeddings"}
    unknown = {"model": "", "route": "/v1/embeddings", "status": "404"}

    def counts() -> list[float]:
        return [
            metric(server, "embed_requests_total", **ok, status="200"),
            metric(server, "embed_requests_total", **ok, status="400"),
            metric(server, "embed_request_duration_seconds_count", **ok),
            metric(server, "embed_requests_total", **unknown),
        ]

    before = counts()
    for text in ("one", "two", "three"):
        assert server.http.post("/v1/embeddings", json={"input": text}).status_code == 200
    assert server.http.post("/v1/embeddings", json={"input": "x", "dimensions": 100000}).status_code == 400
    assert server.http.post("/v1/embeddings", json={"input": "x", "model": "nope"}).status_code == 404
    assert [b - a for a, b in zip(before, counts())] == [3, 1, 4, 1]


def test_swagger_docs_and_openapi(server: AppServer) -> None:
    assert server.http.get(f"{server.url}/docs").status_code == 200
    paths = server.http.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/v1/embeddings", "/embed", "/batch-embed", "/v1/models", "/health/ready"} <= set(paths)


def test_the_openai_client_retrieves_a_model_by_id_or_alias(client: OpenAI) -> None:
    from openai import NotFoundError

    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model" and model.owned_by == "embedserve"
    assert model.model_extra["dimension"] == 384 and model.model_extra["status"] == "loaded"
    assert client.models.retrieve("sentence-transformers/all-MiniLM-L6-v2").id == MODEL
    with pytest.raises(NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert missing.value.body["code"] == "model_not_found" and "'gpt-9' is not served" in missing.value.body["message"]


def test_more_inputs_than_the_limit_is_a_bad_request_as_openai_says(client: OpenAI) -> None:
    from openai import BadRequestError

    with pytest.raises(BadRequestError, match="too many inputs: 2049; the limit is 2048"):
        client.embeddings.create(model=MODEL, input=["x"] * 2049)


def test_token_ids_are_wrapped_in_the_models_special_tokens_like_text(client: OpenAI) -> None:
    # [7592, 2088] are "hello world" in MiniLM's WordPiece vocabulary; [CLS] and [SEP] are added around
    # token-id inputs as around text (README: "Token-id inputs").
    ids = client.embeddings.create(model=MODEL, input=[[7592, 2088]], encoding_format="float")
    text = client.embeddings.create(model=MODEL, input=["hello world"], encoding_format="float")
    np.testing.assert_allclose(ids.data[0].embedding, text.data[0].embedding, atol=1e-6)
    assert ids.usage.prompt_tokens == text.usage.prompt_tokens == 4
