"""Hostile input over real HTTP (the app in-process, listening on loopback): huge and deeply nested JSON,
bad bytes, enormous texts, slow clients.

Whatever a client sends, the server answers in its route's error shape (or serves the request), does
not crash, and keeps serving everyone else meanwhile.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inprocess import AppServer, start_app
from tests.support import connect, parse_response, read_until_closed

MAX_BODY = 12 * 2**20  # above the 10 MB string below, so that it is accepted
READ_TIMEOUT = 2.0  # EMBEDSERVE_BODY_READ_TIMEOUT
MINILM_VOCAB = 30522  # bert-base-uncased's WordPiece vocabulary, which all-MiniLM-L6-v2 uses

OPENAI_TYPES = {status: "invalid_request_error" for status in (400, 404, 408, 413)}
NATIVE_TYPES = {400: "Validation", 404: "NotFound", 408: "Timeout", 413: "PayloadTooLarge", 422: "Validation"}

ROUTES = ["/v1/embeddings", "/embed", "/batch-embed", "/v1/rerank", "/rerank"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, tiny_reranker_dir: Path) -> Iterator[AppServer]:
    running = start_app(
        tmp_path_factory.mktemp("hostile"),
        "--model",
        "all-MiniLM-L6-v2",
        "--model",
        f"rr={tiny_reranker_dir}",
        env={
            "EMBEDSERVE_MAX_BODY_BYTES": str(MAX_BODY),
            "EMBEDSERVE_BODY_READ_TIMEOUT": str(READ_TIMEOUT),
            "EMBEDSERVE_REQUEST_TIMEOUT": "120",  # the 10 MB text takes seconds to tokenize on a small CPU
        },
    )
    yield running
    running.stop()
    assert "Traceback" not in running.log(), running.log()[-5000:]


@pytest.fixture(scope="module")
def max_lengths(hostile: AppServer) -> dict[str, int]:
    cards = httpx.get(f"{hostile.listen()}/v1/models").json()["data"]
    return {card["id"]: card["max_length"] for card in cards}


def assert_error(route: str, response: httpx.Response, *statuses: int) -> dict:
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    if route.startswith("/v1/"):
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert body["error"]["message"] and body["error"]["type"] == OPENAI_TYPES[response.status_code], body
    else:
        assert set(body) == {"error", "error_type"}, body
        assert body["error"] and body["error_type"] == NATIVE_TYPES[response.status_code], body
    return body


def message(route: str, body: dict) -> str:
    return body["error"]["message"] if route.startswith("/v1/") else body["error"]


def still_serving(server: AppServer) -> None:
    response = httpx.post(f"{server.listen()}/v1/embeddings", json={"input": "still here"}, timeout=10)
    assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 384


def post_raw(server: AppServer, route: str, body: bytes, timeout: float = 60) -> httpx.Response:
    headers = {"content-type": "application/json"}
    return httpx.post(f"{server.listen()}{route}", content=body, headers=headers, timeout=timeout)


def with_text(route: str, text_json: bytes) -> bytes:
    """A valid body for `route` whose one text is `text_json` (raw JSON bytes of a string or any value)."""
    return {
        "/v1/embeddings": b'{"input": %s}',
        "/embed": b'{"text": %s}',
        "/batch-embed": b'{"texts": [%s]}',
        "/v1/rerank": b'{"model": "rr", "query": "q", "documents": [%s]}',
        "/rerank": b'{"model": "rr", "query": "q", "texts": [%s]}',
    }[route] % text_json


class Prober:
    """Small requests from another thread, timed, while something hostile goes on."""

    def __init__(self, server: AppServer) -> None:
        self.server = server
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post(f"{self.server.listen()}/v1/embeddings", json={"input": "a small request"})
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.latencies.append(time.monotonic() - started)
                self._stop.wait(0.05)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


# -- huge bodies ----------------------------------------------------------------------------------


def test_many_megabytes_of_valid_json_below_the_limit_are_served(hostile: AppServer) -> None:
    # /v1 routes ignore unknown fields (clients send extras), so megabytes of them must parse and pass.
    filler = json.dumps({"deep": [{"k": i, "v": "x" * 50} for i in range(100_000)]}).encode()
    user = b"u" * (MAX_BODY - len(filler) - 2**20)
    body = b'{"input": ["a short text"], "user": "%s", "metadata": %s}' % (user, filler)
    assert 10 * 2**20 < len(body) < MAX_BODY
    response = post_raw(hostile, "/v1/embeddings", body)
    assert response.status_code == 200, response.text[:500]
    assert response.json()["usage"]["prompt_tokens"] < 10

    ranked = post_raw(hostile, "/v1/rerank", b'{"query": "q", "documents": ["d"], "metadata": %s}' % filler)
    assert ranked.status_code == 200, ranked.text[:500]


@pytest.mark.parametrize("route", ["/v1/embeddings", "/embed", "/v1/rerank", "/rerank"])
def test_json_above_the_body_limit_is_413_declared_or_streamed(hostile: AppServer, route: str) -> None:
    huge = with_text(route, b'"' + b"a" * (MAX_BODY + 2**20) + b'"')
    assert_error(route, post_raw(hostile, route, huge), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while the body streams in
        for start in range(0, len(huge), 2**20):
            yield huge[start : start + 2**20]

    assert_error(route, post_raw(hostile, route, chunks()), 413)  # type: ignore[arg-type]
    still_serving(hostile)


def test_megabytes_of_tiny_inputs_are_refused_by_count(hostile: AppServer) -> None:
    many = b'{"input": [' + b",".join([b'"x"'] * 1_000_000) + b"]}"
    body = assert_error("/v1/embeddings", post_raw(hostile, "/v1/embeddings", many), 400)  # 400 as OpenAI
    assert "2048" in message("/v1/embeddings", body)


# -- malformed bytes --------------------------------------------------------------------------------

NESTED = [
    b"[" * 100_000 + b"]" * 100_000,  # the whole body
    b"[" * 1_000_000,  # and never closed
    b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
]


@pytest.mark.parametrize("route", ROUTES)
def test_deeply_nested_json_is_a_clean_400(hostile: AppServer, route: str) -> None:
    for nested in NESTED:
        assert_error(route, post_raw(hostile, route, nested), 400)
        assert_error(route, post_raw(hostile, route, with_text(route, nested)), 400)
    if route.startswith("/v1/"):  # inside an unknown field, which /v1 routes would otherwise ignore
        extra = with_text(route, b'"x"')[:-1] + b', "extra": %s}' % NESTED[0]
        assert_error(route, post_raw(hostile, route, extra), 400)
    still_serving(hostile)


INVALID_UTF8 = [
    b"\xff\xfe",  # never valid in UTF-8
    b"\xc0\xaf",  # an overlong encoding of "/"
    b"\xe2\x82",  # a truncated sequence
    b"\xed\xa0\x80",  # an encoded surrogate
    b"caf\xe9",  # latin-1
]


@pytest.mark.parametrize("route", ROUTES)
def test_invalid_utf8_is_refused_in_the_route_shape(hostile: AppServer, route: str) -> None:
    for bad in INVALID_UTF8:
        assert_error(route, post_raw(hostile, route, with_text(route, b'"ok ' + bad + b' ok"')), 400, 422)
        assert_error(route, post_raw(hostile, route, bad + with_text(route, b'"ok"')), 400, 422)
    still_serving(hostile)


@pytest.mark.parametrize("route", ROUTES)
def test_nul_characters_inside_a_text_are_served(hostile: AppServer, route: str) -> None:
    # U+0000 is a character like any other (escaped in JSON): the text is embedded or ranked.
    for text in [b'"a\\u0000b"', b'"\\u0000"', b'"\\u0000\\u0000 nul \\u0000 bytes\\u0000"']:
        response = post_raw(hostile, route, with_text(route, text))
        assert response.status_code == 200, response.text[:500]
        values = _numbers(response.json())
        assert values and all(math.isfinite(v) for v in values)
    # A raw NUL byte inside a JSON string is not JSON (control characters must be escaped).
    body = assert_error(route, post_raw(hostile, route, with_text(route, b'"a\x00b"')), 400)
    assert "JSON" in message(route, body)


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, list):
        return [x for item in value for x in _numbers(item)]
    if isinstance(value, dict):
        return [x for item in value.values() for x in _numbers(item)]
    return []


# -- enormous texts ---------------------------------------------------------------------------------


def test_a_10mb_string_is_truncated_and_answered_without_blocking_others(
    hostile: AppServer, max_lengths: dict[str, int]
) -> None:
    text = ("the quick brown fox jumps over the lazy dog " * 250_000)[: 10 * 2**20]
    body = json.dumps({"input": text}).encode()
    with Prober(hostile) as prober:
        time.sleep(0.3)
        started = time.monotonic()
        response = post_raw(hostile, "/v1/embeddings", body, timeout=120)
        elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text[:500]
    assert response.json()["usage"]["prompt_tokens"] == max_lengths["all-MiniLM-L6-v2"]
    # The text is tokenized off the event loop: small requests keep being answered, promptly.
    # (Before it was, one 10 MB text held every other client for the whole ~12 s of its tokenization.)
    latencies = sorted(prober.latencies)
    assert not prober.failures, prober.failures[:3]
    assert len(latencies) >= 3
    # Were the 10 MB text tokenized on the event loop, the probes would wait about as long as it took.
    assert latencies[len(latencies) // 2] < elapsed / 2, (elapsed, latencies[-5:])


HUNDRED_K_TOKENS = " ".join(["word"] * 100_000)


@pytest.mark.parametrize("as_ids", [False, True], ids=["text", "token-ids"])
def test_100k_token_inputs_are_truncated_or_refused_on_v1(
    hostile: AppServer, max_lengths: dict[str, int], as_ids: bool
) -> None:
    long: Any = [1000] * 100_000 if as_ids else HUNDRED_K_TOKENS
    short: Any = [1000, 1001] if as_ids else "short"
    url = f"{hostile.listen()}/v1/embeddings"
    response = httpx.post(url, json={"input": [long, short]}, timeout=60)
    assert response.status_code == 200, response.text[:500]
    # usage counts tokens after truncation: the long input is exactly the model's limit
    alone = httpx.post(url, json={"input": [short]}, timeout=10).json()["usage"]["prompt_tokens"]
    assert response.json()["usage"]["prompt_tokens"] == max_lengths["all-MiniLM-L6-v2"] + alone

    refused = httpx.post(url, json={"input": [long, short], "truncate": False}, timeout=60)
    body = assert_error("/v1/embeddings", refused, 400)
    assert body["error"]["param"] == "input" and str(max_lengths["all-MiniLM-L6-v2"]) in body["error"]["message"]


def test_100k_token_inputs_on_native_and_rerank_routes(hostile: AppServer, max_lengths: dict[str, int]) -> None:
    url = hostile.listen()
    embedded = httpx.post(f"{url}/embed", json={"text": HUNDRED_K_TOKENS}, timeout=60)
    assert embedded.status_code == 200 and embedded.json()["tokens"] == max_lengths["all-MiniLM-L6-v2"]
    refused = httpx.post(f"{url}/embed", json={"text": HUNDRED_K_TOKENS, "truncate": False}, timeout=60)
    assert_error("/embed", refused, 400)

    documents = ["short", HUNDRED_K_TOKENS]
    ranked = httpx.post(f"{url}/v1/rerank", json={"query": "word", "documents": documents}, timeout=60)
    assert ranked.status_code == 200, ranked.text[:500]
    alone = httpx.post(f"{url}/v1/rerank", json={"query": "word", "documents": ["short"]}, timeout=10)
    assert ranked.json()["usage"]["prompt_tokens"] == alone.json()["usage"]["prompt_tokens"] + max_lengths["rr"]
    too_long = httpx.post(
        f"{url}/v1/rerank", json={"query": "word", "documents": documents, "truncate": False}, timeout=60
    )
    assert assert_error("/v1/rerank", too_long, 413)["error"]["param"] == "documents"
    tei = httpx.post(f"{url}/rerank", json={"query": HUNDRED_K_TOKENS, "texts": documents}, timeout=60)
    assert tei.status_code == 200 and len(tei.json()) == 2


@pytest.mark.parametrize(
    "ids",
    [[MINILM_VOCAB], [[1, 2], [10**12]], [2**64], [1, 2, MINILM_VOCAB + 5]],
    ids=["edge", "nested", "2^64", "mid"],
)
def test_token_ids_outside_the_vocabulary_are_400(hostile: AppServer, ids: list) -> None:
    response = httpx.post(f"{hostile.listen()}/v1/embeddings", json={"input": ids}, timeout=10)
    body = assert_error("/v1/embeddings", response, 400)
    assert body["error"]["param"] == "input" and f"[0, {MINILM_VOCAB})" in body["error"]["message"]
    assert httpx.post(f"{hostile.listen()}/v1/embeddings", json={"input": [MINILM_VOCAB - 1]}).status_code == 200


# -- slow clients -----------------------------------------------------------------------------------


def _connect(server: AppServer) -> socket.socket:
    return connect(server.listen(), timeout=READ_TIMEOUT + 30)


def stalled_client(server: AppServer, route: str, *, chunked: bool = False) -> socket.socket:
    """Sends the headers and part of the body, then nothing more."""
    sock = _connect(server)
    body = with_text(route, b'"' + b"x" * 1000 + b'"')
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
    sock.sendall(
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s\r\n\r\n" % (route.encode(), framing)
    )
    part = body[: len(body) // 2]
    sock.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
    return sock


def assert_408(route: str, raw: bytes) -> None:
    status, headers, body = parse_response(raw)
    assert status == 408, raw[:500]
    assert headers.get("connection") == "close"
    parsed = json.loads(body)
    if route.startswith("/v1/"):
        assert parsed["error"]["type"] == "invalid_request_error" and "not received" in parsed["error"]["message"]
    else:
        assert parsed == {"error": parsed["error"], "error_type": "Timeout"}


def test_a_stalled_body_gets_408_in_the_route_shape_and_the_connection_is_closed(hostile: AppServer) -> None:
    cases = [(route, chunked) for route in ("/v1/embeddings", "/embed", "/rerank") for chunked in (False, True)]
    started = time.monotonic()
    sockets = [(route, stalled_client(hostile, route, chunked=chunked)) for route, chunked in cases]
    for route, sock in sockets:
        raw, closed = read_until_closed(sock)
        assert_408(route, raw)
        assert READ_TIMEOUT - 0.2 < closed - started < READ_TIMEOUT + 3
    still_serving(hostile)


def test_slow_loris_clients_do_not_hold_up_others_and_are_cut_off(hostile: AppServer) -> None:
    stalled = [stalled_client(hostile, ROUTES[i % len(ROUTES)], chunked=i % 2 == 1) for i in range(40)]

    # A client that trickles its body a byte at a time: the timeout bounds the whole body, not each read.
    dripper = _connect(hostile)
    dripper.sendall(
        b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )

    def drip() -> None:
        try:
            for _ in range(int((READ_TIMEOUT + 8) / 0.2)):
                dripper.sendall(b" ")
                time.sleep(0.2)
        except OSError:
            return  # the server closed it

    dripping = threading.Thread(target=drip, daemon=True)
    dripping.start()

    # Meanwhile everyone else is served as usual.
    with httpx.Client(timeout=60) as client:
        for i in range(5):
            response = client.post(f"{hostile.listen()}/embed", json={"text": f"a normal client {i}"})
            assert response.status_code == 200

    # Each stalled client is cut off by the body deadline (408), the dripper too although it keeps sending:
    # it would go on for READ_TIMEOUT + 8 s and its body never completes.
    for sock in stalled:
        raw, _ = read_until_closed(sock)
        assert parse_response(raw)[0] == 408
    raw, closed = read_until_closed(dripper)
    assert not raw or parse_response(raw)[0] == 408
    dripping.join(timeout=15)
    still_serving(hostile)


def test_a_slow_but_steady_upload_within_the_timeout_is_served(hostile: AppServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"input": "a slow'
        time.sleep(READ_TIMEOUT / 3)
        yield b' but complete body"}'

    response = post_raw(hostile, "/v1/embeddings", chunks())  # type: ignore[arg-type]
    assert response.status_code == 200, response.text[:500]
