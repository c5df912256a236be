"""Connections over a real socket (the app in-process, served by uvicorn with our HTTP protocol): a
deadline for request headers, a cap on open connections, and a stop that answers what is on the wire."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from tests.inprocess import AppServer, start_app
from tests.support import read_one_response

HEADER_TIMEOUT = 1.0
CAP = 20


@pytest.fixture(scope="module")
def capped() -> Iterator[AppServer]:
    env = {"EMBEDSERVE_HEADER_READ_TIMEOUT": str(HEADER_TIMEOUT), "EMBEDSERVE_MAX_CONNECTIONS": str(CAP)}
    running = start_app(None, env=env)
    running.listen()
    yield running
    running.stop()


def connect(server: AppServer) -> socket.socket:
    address = urlparse(server.listen())
    # The deadlines under test are the server's; this timeout only turns a hang into a failure.
    return socket.create_connection((address.hostname, address.port), timeout=60)


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server kept the connection open; got {data[:300]!r}")
    finally:
        sock.close()
    return data


def status_and_body(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


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
    sock = connect(capped)
    sock.sendall(head)
    status, body = status_and_body(read_until_closed(sock))
    assert status == 408
    if shape == "openai":
        assert body["error"]["type"] == "invalid_request_error" and "headers did not arrive" in body["error"]["message"]
    else:
        assert body["error_type"] == "Timeout" and "headers did not arrive" in body["error"]


def test_a_slow_but_complete_head_is_served(capped: AppServer) -> None:
    sock = connect(capped)
    whole = request()
    head_end = whole.index(b"\r\n\r\n")
    for i in range(0, head_end, 20):  # the head in pieces, well within the deadline as a whole
        sock.sendall(whole[i : i + 20])
    sock.sendall(whole[head_end:])
    assert status_and_body(read_until_closed(sock))[0] == 200


def test_past_the_cap_a_connection_gets_503_at_once_and_clients_are_served_once_the_slow_are_cut(
    capped: AppServer,
) -> None:
    slow = [connect(capped) for _ in range(CAP)]
    for sock in slow:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")  # and nothing more
    extra = connect(capped)
    status, body = status_and_body(read_until_closed(extra))
    assert status == 503 and "limit" in body["error"]["message"]
    # The header deadline frees the slots the slow clients held...
    for sock in slow:
        assert status_and_body(read_until_closed(sock))[0] == 408
    # ...and everyone else is served again.
    sock = connect(capped)
    sock.sendall(request())
    assert status_and_body(read_until_closed(sock))[0] == 200


def test_requests_on_the_wire_when_the_server_stops_are_answered_not_reset() -> None:
    server = start_app(None)
    try:
        idle = [connect(server) for _ in range(20)]
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
                answers.append(read_until_closed(sock))
            except (ConnectionResetError, BrokenPipeError):
                answers.append(b"reset")
    finally:
        server.stop()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" in answer.lower(), answer[:200]
