"""Small things clients and proxies parse: Allow on a 405, empty prompt names, and what a request that
names no usable model is told."""

from __future__ import annotations

import pytest

from tests.inprocess import AppServer


def test_a_wrong_method_is_a_405_listing_every_method_of_the_path(server: AppServer) -> None:
    answer = server.http.options("/v1/backends")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "DELETE, GET, POST"
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and "allowed: DELETE, GET, POST" in error["message"]
    native = server.http.put("/embed", json={"text": "x"})
    assert native.status_code == 405 and native.json()["error_type"] == "MethodNotAllowed"
    assert native.headers["allow"] == "POST"


@pytest.mark.parametrize("route", ["/v1/embeddings", "/embed"])
def test_an_empty_prompt_name_means_none(server: AppServer, route: str) -> None:
    field = "input" if route == "/v1/embeddings" else "text"
    plain = server.http.post(route, json={field: "a query"})
    empty = server.http.post(route, json={field: "a query", "prompt_name": ""})
    assert empty.status_code == 200, empty.text
    assert empty.json() == plain.json()


def test_rerank_with_no_reranker_served_says_so(server: AppServer) -> None:
    answer = server.http.post("/v1/rerank", json={"query": "q", "documents": ["d"]})
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == "no rerank model is served here"


def test_an_embedder_named_for_reranking_is_said_to_be_served_for_embedding(server: AppServer) -> None:
    answer = server.http.post("/v1/rerank", json={"model": "all-MiniLM-L6-v2", "query": "q", "documents": ["d"]})
    assert answer.status_code == 404
    message = answer.json()["error"]["message"]
    assert message == "model 'all-MiniLM-L6-v2' is served for embed, not rerank; served rerank models: none"


def test_dimensions_beyond_the_model_name_both_numbers(server: AppServer) -> None:
    answer = server.http.post("/v1/embeddings", json={"input": "x", "dimensions": 385})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["message"] == "dimensions 385 is larger than the 384 dimensions of model 'all-MiniLM-L6-v2'"
    assert error["param"] == "dimensions"


def test_the_published_schema_says_what_truncate_false_answers(server: AppServer) -> None:
    too_long = server.http.post("/embed", json={"inputs": "word " * 600, "truncate": False})
    assert too_long.status_code == 400
    schemas = server.http.get("/openapi.json").json()["components"]["schemas"]
    described = [
        schema["properties"]["truncate"]["description"]
        for schema in schemas.values()
        if "truncate" in schema.get("properties", {}) and "description" in schema["properties"]["truncate"]
    ]
    # The embedding routes' descriptions (rerankers answer 413 for a long pair; Cohere's truncate is an enum).
    embedding = [text for text in described if text.startswith("Truncate over-long texts")]
    assert embedding and all(text.endswith("false: 400 instead.") for text in embedding), described
