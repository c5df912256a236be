"""Bad input gets the documented status in the route's own error shape, and the server keeps serving."""

from __future__ import annotations

from typing import Any

import pytest

from tests.inprocess import AppServer

OPENAI = "/v1/embeddings"

# (route, body as JSON value or raw bytes, status)
CASES: list[tuple[str, Any, int]] = [
    (OPENAI, {"input": ""}, 400),
    (OPENAI, {"input": ["ok", ""]}, 400),
    (OPENAI, {"input": []}, 400),
    (OPENAI, {"input": 123}, 400),
    (OPENAI, {"input": {"text": "x"}}, 400),
    (OPENAI, {"input": [1, "mixed"]}, 400),
    (OPENAI, {"input": [[]]}, 400),
    (OPENAI, {"input": [-5]}, 400),
    (OPENAI, {"input": [10**9]}, 400),
    (OPENAI, {"input": "x", "model": 5}, 400),
    (OPENAI, {"input": "x", "encoding_format": "int8"}, 400),
    (OPENAI, {"input": "x", "dimensions": 0}, 400),
    (OPENAI, {"input": "x", "dimensions": 385}, 400),
    (OPENAI, {"model": "all-MiniLM-L6-v2"}, 400),
    (OPENAI, ["not", "an", "object"], 400),
    (OPENAI, {"input": ["x"] * 3000}, 400),  # as OpenAI: a BadRequestError in its clients
    (OPENAI, {"input": "x", "model": "no-such-model"}, 404),
    (OPENAI, b'{"input": "unterminated', 400),
    (OPENAI, b"\xff\xfe not utf-8", 400),
    ("/embed", {"text": ""}, 422),
    ("/embed", {"text": 5}, 422),
    ("/embed", {"texts": ["wrong field"]}, 422),
    ("/embed", {"text": "x", "model": "no-such-model"}, 404),
    ("/embed", b"{not json", 400),
    ("/batch-embed", {"texts": "not a list"}, 422),
    ("/batch-embed", {"texts": []}, 422),
    ("/batch-embed", {"texts": ["x"] * 3000}, 413),
]


def assert_error_shape(route: str, body: dict) -> None:
    if route.startswith("/v1/"):
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
    else:
        assert set(body) == {"error", "error_type"}
        assert isinstance(body["error"], str) and body["error"]


def still_serving(server: AppServer) -> None:
    response = server.http.post(f"{server.url}/v1/embeddings", json={"input": "still here"})
    assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 384


@pytest.mark.parametrize(("route", "body", "status"), CASES, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(CASES)])
def test_bad_input_is_answered_in_the_route_shape(server: AppServer, route: str, body: Any, status: int) -> None:
    if isinstance(body, bytes):
        response = server.http.post(f"{server.url}{route}", content=body, headers={"content-type": "application/json"})
    else:
        response = server.http.post(f"{server.url}{route}", json=body)
    assert response.status_code == status, response.text
    assert_error_shape(route, response.json())
    still_serving(server)


def test_limits_are_named_in_the_message(server: AppServer) -> None:
    response = server.http.post(f"{server.url}{OPENAI}", json={"input": ["x"] * 3000})
    assert "2048" in response.json()["error"]["message"]


@pytest.mark.parametrize("route", [OPENAI, "/embed"])
def test_oversized_body_is_413_with_or_without_content_length(server: AppServer, route: str) -> None:
    huge = b'{"input": "' + b"a" * (17 * 2**20) + b'"}'
    declared = server.http.post(f"{server.url}{route}", content=huge, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert_error_shape(route, declared.json())

    def chunks():  # no Content-Length: the limit must hold while the body streams in
        for start in range(0, len(huge), 2**20):
            yield huge[start : start + 2**20]

    streamed = server.http.post(f"{server.url}{route}", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert_error_shape(route, streamed.json())
    still_serving(server)


def test_unknown_model_lists_served_ids(server: AppServer) -> None:
    error = server.http.post(f"{server.url}{OPENAI}", json={"input": "x", "model": "gpt-9"}).json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "all-MiniLM-L6-v2" in error["message"]
