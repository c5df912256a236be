"""Fuzz the whole HTTP API from its own OpenAPI schema (schemathesis) against a real server.

Every operation the server documents gets schema-valid (positive) and schema-violating (negative)
requests. Whatever they hold, the server must never answer 5xx, must answer every 4xx in its route's
documented error shape, and must still be healthy afterwards.

The schema is fetched from the running server in a fixture and each operation is driven through its
Hypothesis strategy (`operation.as_strategy`) under our own `@given`: schemathesis's lazy pytest loader
(`schemathesis.pytest.from_fixture`) reads `Function._nodeid`, which the pinned pytest 9 no longer has.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.inprocess import AppServer, start_app

MAX_INPUTS = 64
EXAMPLES = 100  # per operation and mode

# (method, path, whether it takes a body that can be made invalid)
OPERATIONS = [
    ("POST", "/v1/embeddings", True),
    ("POST", "/embed", True),
    ("POST", "/batch-embed", True),
    ("POST", "/embed_sparse", True),
    ("POST", "/v1/rerank", True),
    ("POST", "/v1/embed", True),
    ("POST", "/v2/embed", True),
    ("POST", "/v2/rerank", True),
    ("POST", "/", True),
    ("POST", "/similarity", True),
    ("POST", "/embed_all", True),
    ("POST", "/v1/multi-vector", True),
    ("POST", "/tokenize", True),
    ("POST", "/decode", True),
    ("POST", "/predict", True),
    ("GET", "/info", False),
    ("POST", "/rerank", True),
    ("GET", "/v1/models", False),
    ("GET", "/v1/models/{model_id}", False),  # an invalid id cannot be sent: URLs normalize it away
    ("POST", "/v1/chat/completions", True),
    ("POST", "/v1/completions", True),
    ("POST", "/v1/images/generations", True),
    ("GET", "/v1/backends", False),
    ("POST", "/v1/backends", True),
    ("DELETE", "/v1/backends", True),
    # The Batch API: what the fuzzer uploads are files it never names (their ids are random), so it starts no jobs.
    ("POST", "/v1/files", True),
    ("GET", "/v1/files", False),
    ("GET", "/v1/files/{file_id}", False),
    ("GET", "/v1/files/{file_id}/content", False),
    ("DELETE", "/v1/files/{file_id}", False),
    ("POST", "/v1/batches", True),
    ("GET", "/v1/batches", False),
    ("GET", "/v1/batches/{batch_id}", False),
    ("POST", "/v1/batches/{batch_id}/cancel", False),
    ("GET", "/health", False),
    ("GET", "/health/live", False),
    ("GET", "/health/ready", False),
    ("GET", "/metrics", False),
]
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path, has_body in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if has_body or mode is GenerationMode.POSITIVE  # nothing to make invalid in a bare GET
]

OPENAI_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
}
ADMIN_KEY = "fuzz-admin-key"
NATIVE_TYPES = {400: "Validation", 404: "NotFound", 413: "PayloadTooLarge", 422: "Validation"}

# Schema-valid requests that the server refuses on purpose, as README's error table documents: the schema
# cannot say which prompts a model has, how many dimensions it has, how large its vocabulary is, which
# models are served, or the request limits. schemathesis's `positive_data_acceptance` expects 2xx for
# any schema-valid body, so it is replaced by this explicit list: a schema-valid request may be refused
# only with one of these statuses and reasons.
DOCUMENTED_REFUSALS: dict[int, re.Pattern[str]] = {
    400: re.compile(
        r"has no prompt|prompt_name applies to text inputs|dimensions \d+ is larger than|dimensions must be between"
        r"|outside the vocabulary|has no sparse head|truncation is off"
        r"|'model' is required|is not an http\(s\) base URL|too many inputs"
        r"|not supported: (use END|texts are cut|this server embeds text)|exactly one of `texts` or `inputs`"
        r"|name one with (\?model=|`model`) or X-Model"
        r"|apply to a classification model"
        r"|gives no multi-vector embeddings|gives its multi-vector embeddings in \d+ dimensions only"
        r"|weights must not all be 0|mode applies to an embedding model|without bge-m3's .* it cannot rerank"
        r"|send embedding_type or encoding_format base64, not both"
        r"|late_chunking takes text chunks|late chunking encodes the inputs as one text|has no tokens: each chunk"
        r"|instruction applies to LLM rerankers|whose rerank APIs take no instruction"
    ),
    # No upstream is configured here: generation and the admin API name models that are not served.
    # A path parameter that the URL normalizes away (".", "..", "/") leaves a path with no route.
    404: re.compile(
        r"is not served|is served for \w+, not|no \w+ model is served|is not an upstream model|there is no route"
        r"|there is no (file|batch) "
    ),
    413: re.compile(r"too many (inputs|documents|texts)|truncation is off|a row each in the answer"),
}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, tiny_reranker_dir: Path) -> Iterator[AppServer]:
    running = start_app(
        tmp_path_factory.mktemp("fuzz"),
        "--model",
        "all-MiniLM-L6-v2",
        "--model",
        f"rr={tiny_reranker_dir}",
        env={
            "EMBEDSERVE_MAX_INPUTS": str(MAX_INPUTS),
            "EMBEDSERVE_MAX_DOCUMENTS": str(MAX_INPUTS),
            "EMBEDSERVE_ADMIN_KEY": ADMIN_KEY,
            "EMBEDSERVE_DATA_DIR": str(tmp_path_factory.mktemp("fuzz-data")),
        },
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: AppServer):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_url(f"{fuzz_server.listen()}/openapi.json")


def test_every_served_operation_is_fuzzed(api_schema) -> None:  # type: ignore[no-untyped-def]
    served = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert served == {(method, path) for method, path, _ in OPERATIONS}


def is_cohere(path: str) -> bool:
    """Cohere's routes: /v2's, and v1's /v1/embed among OpenAI's /v1 routes."""
    return path.startswith("/v2/") or path == "/v1/embed"


def assert_error_shape(path: str, status: int, body: Any) -> None:
    if is_cohere(path):
        assert isinstance(body, dict) and set(body) == {"id", "message"}, body
        assert isinstance(body["message"], str) and body["message"], body
        return
    if path.startswith("/v1/"):
        assert isinstance(body, dict) and set(body) == {"error"}, body
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"], error
        assert error["type"] == OPENAI_TYPES.get(status), error
        assert error["param"] is None or isinstance(error["param"], str), error
        assert error["code"] is None or isinstance(error["code"], str), error
    else:
        assert isinstance(body, dict) and set(body) == {"error", "error_type"}, body
        assert isinstance(body["error"], str) and body["error"], body
        assert body["error_type"] == NATIVE_TYPES.get(status), body


def error_message(path: str, body: dict) -> str:
    if is_cohere(path):
        return body["message"]
    return body["error"]["message"] if path.startswith("/v1/") else body["error"]


def check(case, response) -> None:  # type: ignore[no-untyped-def]
    path, status = case.operation.path, response.status_code
    reproduce = f"{case.method} {path} {case.body!r:.2000} -> {status} {response.content[:500]!r}"
    # 503 is "not ready", which the fixture waited past; nothing else may be a 5xx.
    assert status < 500, reproduce
    assert response.headers.get("x-request-id"), reproduce
    if status < 400:
        return
    assert response.headers["content-type"][0] == "application/json", reproduce
    body = json.loads(response.content)
    assert_error_shape(path, status, body)
    if case.meta.generation.mode is GenerationMode.POSITIVE:
        documented = DOCUMENTED_REFUSALS.get(status)
        assert documented is not None and documented.search(error_message(path, body)), reproduce


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_fuzz(api_schema, fuzz_server: AppServer, method: str, path: str, mode: GenerationMode) -> None:  # type: ignore[no-untyped-def]
    operation = api_schema[path][method]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same examples on every run
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case) -> None:  # type: ignore[no-untyped-def]
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"} if path.startswith("/v1/backends") else None
        response = case.call(base_url=fuzz_server.listen(), timeout=60, headers=admin)
        check(case, response)
        # The rest of schemathesis's checks: the status is documented, 2xx bodies match their schema,
        # content types and headers are as documented, schema-violating requests are rejected...
        # but not `positive_data_acceptance`: `check` holds the explicit list of refusals it allows.
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    fuzz()


def test_still_healthy_after_fuzzing(fuzz_server: AppServer) -> None:
    assert fuzz_server.http.get(f"{fuzz_server.url}/health/ready", timeout=5).status_code == 200
    response = fuzz_server.http.post(f"{fuzz_server.url}/v1/embeddings", json={"input": "still here"}, timeout=30)
    assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 384
    ranked = fuzz_server.http.post(f"{fuzz_server.url}/rerank", json={"query": "q", "texts": ["a", "b"]}, timeout=30)
    assert ranked.status_code == 200 and len(ranked.json()) == 2
    assert "Traceback" not in fuzz_server.log()
