"""Each upstream protocol's wire shapes: what we send, and how we read (or refuse) what comes back."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from embedserve.server.serving.upstream.client import fit
from embedserve.server.serving.upstream.protocols import PROTOCOLS, BadAnswer, EmbedParams, Unsupported

openai, infinity, tei, ollama = (PROTOCOLS[name] for name in ("openai", "infinity", "tei", "ollama"))


def test_openai_urls_take_a_base_url_as_openai_clients_do() -> None:
    assert openai.embed_url("http://h:8000") == "http://h:8000/v1/embeddings"
    assert openai.embed_url("https://api.example.com/v1") == "https://api.example.com/v1/embeddings"
    assert openai.rerank_url("http://h:8000") == "http://h:8000/v1/rerank"
    assert openai.health_url("http://h:8000") == "http://h:8000/v1/models"
    assert openai.generation_url("http://h:8000", "chat") == "http://h:8000/v1/chat/completions"
    assert openai.generation_url("http://h:8000/v1", "images") == "http://h:8000/v1/images/generations"


def test_each_protocol_has_its_own_routes() -> None:
    assert infinity.embed_url("http://h") == "http://h/embeddings"
    assert infinity.health_url("http://h") == "http://h/health"
    assert tei.embed_url("http://h") == "http://h/embed" and tei.rerank_url("http://h") == "http://h/rerank"
    assert ollama.embed_url("http://h") == "http://h/api/embed"
    assert ollama.health_url("http://h") == "http://h/api/version"
    assert ollama.generation_url("http://h", "chat") == "http://h/v1/chat/completions"
    assert tei.health_url("http://h", "/ready") == "http://h/ready"
    with pytest.raises(Unsupported):
        ollama.rerank_url("http://h")


def test_openai_body_sends_extensions_only_when_asked_for() -> None:
    plain = openai.embed_body(["a"], "m", EmbedParams())
    assert plain == {"model": "m", "input": ["a"], "encoding_format": "float"}
    full = openai.embed_body([[1, 2]], "m", EmbedParams(dimensions=8, truncate=False, prompt_name="query"))
    assert full == {
        "model": "m",
        "input": [[1, 2]],
        "encoding_format": "float",
        "dimensions": 8,
        "truncate": False,
        "prompt_name": "query",
    }


def test_tei_and_ollama_bodies() -> None:
    assert tei.embed_body(["a", "b"], "m", EmbedParams(normalize=False, dimensions=4)) == {
        "inputs": ["a", "b"],
        "truncate": True,
        "normalize": False,
        "dimensions": 4,
    }
    assert ollama.embed_body(["a"], "nomic", EmbedParams(truncate=False)) == {
        "model": "nomic",
        "input": ["a"],
        "truncate": False,
    }
    assert tei.rerank_body("q", ["d"], "m", raw_scores=True, truncate=False) == {
        "query": "q",
        "texts": ["d"],
        "raw_scores": True,
        "truncate": False,
    }


@pytest.mark.parametrize("protocol", [tei, ollama, infinity])
def test_token_ids_go_only_to_openai_upstreams(protocol) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Unsupported, match="text only"):
        protocol.embed_body([[101, 102]], "m", EmbedParams())


def test_reading_openai_embeddings_in_index_order_with_usage() -> None:
    payload = {
        "data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}],
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    rows, tokens = openai.read_embeddings(payload, 2)
    assert rows.tolist() == [[1.0, 0.0], [0.0, 1.0]] and tokens == 7


def test_reading_base64_embeddings() -> None:
    row = np.array([0.5, -2.0], dtype="<f4")
    payload = {"data": [{"index": 0, "embedding": base64.b64encode(row.tobytes()).decode()}]}
    assert openai.read_embeddings(payload, 1)[0].tolist() == [[0.5, -2.0]]


def test_reading_tei_and_ollama_embeddings() -> None:
    assert tei.read_embeddings([[1, 2], [3, 4]], 2)[1] is None
    answer = {"model": "m", "embeddings": [[1, 2]], "total_duration": 5, "prompt_eval_count": 3}
    rows, tokens = ollama.read_embeddings(answer, 1)
    assert rows.shape == (1, 2) and tokens == 3


def test_reading_scores_back_into_document_order() -> None:
    cohere = {
        "results": [
            {"index": 2, "relevance_score": 0.9},
            {"index": 0, "relevance_score": 0.5},
            {"index": 1, "relevance_score": 0.1},
        ]
    }
    assert openai.read_scores(cohere, 3)[0].tolist() == pytest.approx([0.5, 0.1, 0.9])
    assert tei.read_scores([{"index": 1, "score": 2.0}, {"index": 0, "score": -1.0}], 2)[0].tolist() == [-1.0, 2.0]


@pytest.mark.parametrize(
    ("read", "payload", "count"),
    [
        (openai.read_embeddings, {"data": [{"index": 0, "embedding": [1.0]}]}, 2),  # too few vectors
        (openai.read_embeddings, {"object": "error"}, 1),
        (openai.read_embeddings, {"data": [{"index": 0, "embedding": "not base64!"}]}, 1),
        (tei.read_embeddings, [[1.0, 2.0], [3.0]], 2),  # ragged
        (tei.read_embeddings, [["a"]], 1),
        (tei.read_embeddings, {"error": "x"}, 1),
        (ollama.read_embeddings, {"embedding": [1.0]}, 1),  # the old /api/embeddings shape
        (openai.read_scores, {"results": [{"index": 0, "relevance_score": 1.0}]}, 2),  # a document unscored
        (tei.read_scores, [{"index": 5, "score": 1.0}], 1),
    ],
)
def test_answers_in_another_shape_are_refused(read, payload, count) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadAnswer):
        read(payload, count)


def test_fit_cuts_to_dimensions_and_renormalizes() -> None:
    rows = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    assert fit(rows, 2, None)[0].tolist() == pytest.approx([0.6, 0.8])
    assert fit(rows, None, None).tolist() == rows.tolist()  # nothing asked, nothing changed
    assert np.linalg.norm(fit(rows, None, True)) == pytest.approx(1.0)
