"""Connections over a real socket (the app in-process, served by uvicorn with our HTTP protocol): a
deadline for request headers, a cap on open connections, and a stop that answers what is on the wire."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.inprocess import AppServer, start_app
from tests.support import connect, parse_response, read_one_response, read_until_closed

HEADER_TIMEOUT = 1.0
CAP = 20


@pytest.fixture(scope="module")
def capped() -> Iterator[AppServer]:
    env = {"EMBEDSERVE_HEADER_READ_TIMEOUT": str(HEADER_TIMEOUT), "EMBEDSERVE_MAX_CONNECTIONS": str(CAP)}
    running = start_app(None, env=env)
    running.listen()
    yield running
    running.stop()


def connect_to(server: AppServer) -> socket.socket:
    return connect(server.listen(), timeout=60)


def status_and_body(raw: bytes) -> tuple[int, dict]:
    status, _, body = parse_response(raw)
    return status, json.loads(body)


def request(path: str = "/embed", body: bytes = b'{"text": "a normal client"}', close: bool = True) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s" % (
        path.encode(),
        connection,
        len(body),
        body,
    )


@pytest.mark.parametrize(
    ("head", "shape"),
    [
        (b"", "native"),  # connected and silent
        (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n", "openai"),  # a head that never ends
        (b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Le", "native"),
    ],
)
def test_a_head_that_never_completes_gets_408_in_the_routes_shape_and_is_closed(
    capped: AppServer, head: bytes, shape: str
) -> None:
    sock = connect_to(capped)
    sock.sendall(head)
    status, body = status_and_body(read_until_closed(sock)[0])
    assert status == 408
    if shape == "openai":
        assert body["error"]["type"] == "invalid_request_error" and "headers did not arrive" in body["error"]["message"]
    else:
        assert body["error_type"] == "Timeout" and "headers did not arrive" in body["error"]


def test_a_slow_but_complete_head_is_served(capped: AppServer) -> None:
    sock = connect_to(capped)
    whole = request()
    head_end = whole.index(b"\r\n\r\n")
    for i in range(0, head_end, 20):  # the head in pieces, well within the deadline as a whole
        sock.sendall(whole[i : i + 20])
    sock.sendall(whole[head_end:])
    assert status_and_body(read_until_closed(sock)[0])[0] == 200


def test_past_the_cap_a_connection_gets_503_at_once_and_clients_are_served_once_the_slow_are_cut(
    capped: AppServer,
) -> None:
    slow = [connect_to(capped) for _ in range(CAP)]
    for sock in slow:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")  # and nothing more
    extra = connect_to(capped)
    status, body = status_and_body(read_until_closed(extra)[0])
    assert status == 503 and "limit" in body["error"]["message"]
    # The header deadline frees the slots the slow clients held...
    for sock in slow:
        assert status_and_body(read_until_closed(sock)[0])[0] == 408
    # ...and everyone else is served again.
    sock = connect_to(capped)
    sock.sendall(request())
    assert status_and_body(read_until_closed(sock)[0])[0] == 200


def test_requests_on_the_wire_when_the_server_stops_are_answered_not_reset() -> None:
    server = start_app(None)
    try:
        idle = [connect_to(server) for _ in range(20)]
        for sock in idle:  # one request each, then idle keep-alive connections
            sock.sendall(request(close=False))
            assert read_one_response(sock).startswith(b"HTTP/1.1 200")
        for sock in idle:
            sock.sendall(request(close=False))
        # What SIGTERM does to each connection, queued ahead of the loop's reading of the bytes just sent.
        server.shut_connections()
        answers = []
        for sock in idle:
            try:
                answers.append(read_until_closed(sock)[0])
            except (ConnectionResetError, BrokenPipeError):
                answers.append(b"reset")
    finally:
        server.stop()
    # Each request is answered and then its connection is closed (read_until_closed fails on one kept open).
    # A request the loop had read before the shutdown ran may be answered before it, so without
    # "connection: close"; one read after it says so. Either way the client has its answer, not a reset.
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert answer.count(b"HTTP/1.1 ") == 1, answer[:200]
