"""Refusals at the door: once the model a route would use is saturated, requests are refused before
their bodies are read, parsed or tokenized; what was admitted completes."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest

from tests.inprocess import AppServer, start_app
from tests.support import read_one_response

MODEL = "all-MiniLM-L6-v2"
JSON = {"content-type": "application/json"}
# The routes that queue work on an embedding model's own batcher (TEI's base route among them).
EMBEDDING_ROUTES = ["/v1/embeddings", "/embed", "/batch-embed", "/v2/embed", "/v1/embed", "/similarity", "/"]


@pytest.fixture(scope="module")
def small_queue() -> Iterator[AppServer]:
    # One batch at a time, which the tests hold: the queue behind it then fills.
    running = start_app(None, "--max-queue-items", "4", "--max-batch-size", "1", "--batch-workers", "1")
    yield running
    running.stop()


class Gate:
    """Holds the model's worker at the start of each batch until opened: the queue behind it stays put."""

    def __init__(self, server: AppServer) -> None:
        self.batcher = server.app.state.host.get(MODEL, "embed").batcher
        self._run = self.batcher._run_batch
        self.open = threading.Event()
        self.entered = threading.Event()

    def __enter__(self) -> Gate:
        def held(payloads):  # type: ignore[no-untyped-def]
            self.entered.set()
            self.open.wait(60)
            return self._run(payloads)

        self.batcher._run_batch = held
        return self

    def __exit__(self, *exc: object) -> None:
        self.open.set()
        self.batcher._run_batch = self._run


def socket_address(server: AppServer) -> tuple[str, int]:
    url = urlparse(server.listen())
    return url.hostname or "", url.port or 80


def raw_request(body: bytes) -> bytes:
    head = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


def rejections(server: AppServer) -> float:
    lines = server.http.get("/metrics").text.splitlines()
    found = [line for line in lines if line.startswith('embed_rejections_total{model="",reason="overload"}')]
    return float(found[0].split()[-1]) if found else 0.0


async def test_a_saturated_model_refuses_before_reading_the_body_and_admitted_work_completes(
    small_queue: AppServer,
) -> None:
    before = rejections(small_queue)
    async with small_queue.async_http() as client:
        with Gate(small_queue) as gate:
            running = asyncio.create_task(client.post("/embed", json={"text": "running"}))
            await asyncio.to_thread(gate.entered.wait, 60)
            queued = asyncio.create_task(client.post("/v1/embeddings", json={"input": ["q1", "q2", "q3", "q4"]}))
            while small_queue.app.state.host.get(MODEL, "embed").batcher.queued_items < 4:
                await asyncio.sleep(0.01)
            # The queue is at its bound: a body that is not even JSON is refused as overload, not as a 400,
            # on every route that would queue on it, in the route's own error shape.
            garbage = {path: await client.post(path, content=b"{not json", headers=JSON) for path in EMBEDDING_ROUTES}
            assert {path: r.status_code for path, r in garbage.items()} == dict.fromkeys(EMBEDDING_ROUTES, 429)
            assert all(int(r.headers["retry-after"]) >= 1 for r in garbage.values())
            assert garbage["/v1/embeddings"].json()["error"]["code"] == "overloaded"
            assert garbage["/"].json()["error_type"] == "Overloaded"
            assert garbage["/v1/embed"].json()["message"] == garbage["/v2/embed"].json()["message"]  # Cohere's
            native = await client.post("/embed", json={"text": "one more"})
            assert native.status_code == 429 and native.json()["error_type"] == "Overloaded"
            # Sparse weights and token embeddings queue on batchers of their own, which are not saturated:
            # their requests pass the door (and this body is then a 400).
            for path in ("/embed_sparse", "/embed_all"):
                passed = await client.post(path, content=b"{not json", headers=JSON)
                assert passed.status_code == 400, (path, passed.text)
            # Routes of other kinds, and everything not queueing model work, are not refused.
            assert (await client.get("/v1/models")).status_code == 200
            # Over a socket the protocol refuses as soon as the head is parsed, skips the body, and
            # keeps the connection for the next request.
            sock = await asyncio.to_thread(socket.create_connection, socket_address(small_queue), 60)
            await asyncio.to_thread(sock.sendall, raw_request(b"{not json" * 1000))
            first = await asyncio.to_thread(read_one_response, sock)
            assert first.lower().startswith(b"http/1.1 429") and b"retry-after:" in first.lower()
            # The same refusal as the app's own: body, and headers in the same order (but the request id's value).
            head, _, body = first.partition(b"\r\n\r\n")
            in_process = garbage["/v1/embeddings"]
            assert body == in_process.content
            assert [line.split(b": ")[0] for line in head.split(b"\r\n")[1:]] == [n for n, _ in in_process.headers.raw]
            gate.open.set()
            assert (await running).status_code == 200
            assert (await queued).status_code == 200
            await asyncio.to_thread(sock.sendall, raw_request(b'{"input": "on the same connection"}'))
            assert ((await asyncio.to_thread(read_one_response, sock)).lower()).startswith(b"http/1.1 200")
            sock.close()
        assert (await client.post("/embed", json={"text": "after"})).status_code == 200
    assert rejections(small_queue) == before + len(EMBEDDING_ROUTES) + 2


class Saturated:
    """A batcher that would refuse any request now, for 7 s."""

    def full(self, within: float | None = None, priority: str = "interactive") -> float:
        return 7.0


class Idle:
    """A batcher with room."""

    def full(self, within: float | None = None, priority: str = "interactive") -> None:
        return None


async def test_sparse_and_token_embeddings_are_admitted_against_their_own_batchers(
    small_queue: AppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = small_queue.app.state.host.get(MODEL, "embed")
    async with small_queue.async_http() as client:

        async def statuses() -> dict[str, int]:
            answers = {
                path: await client.post(path, content=b"{not json", headers=JSON)
                for path in ("/embed", "/embed_sparse", "/embed_all")
            }
            assert all(r.headers["retry-after"] == "7" for r in answers.values() if r.status_code == 429)
            return {path: r.status_code for path, r in answers.items()}

        monkeypatch.setattr(served, "output_batchers", {"sparse": Saturated()})
        assert await statuses() == {"/embed": 400, "/embed_sparse": 429, "/embed_all": 400}
        monkeypatch.setattr(served, "output_batchers", {"sparse": Idle(), "tokens": Saturated()})
        assert await statuses() == {"/embed": 400, "/embed_sparse": 400, "/embed_all": 429}
        monkeypatch.setattr(served, "output_batchers", {"sparse": Idle(), "tokens": Idle()})
        monkeypatch.setattr(served, "batcher", Saturated())
        assert await statuses() == {"/embed": 429, "/embed_sparse": 400, "/embed_all": 400}


async def test_a_fresh_server_judges_its_first_burst_by_a_probe_of_the_model_not_blind() -> None:
    # Before this, a batcher had measured nothing until its first batch finished, and admitted every request of a
    # first burst whatever its deadline: torch on long texts took ~50 s of work into a 30 s deadline.
    fresh = start_app(None, "--batch-workers", "1")
    try:
        batcher = fresh.app.state.host.get(MODEL, "embed").batcher
        rate = batcher.tokens_per_second
        assert rate is not None and rate > 0, "the model was probed before it was served"
        assert "model probed" in fresh.log()
        assert 'embed_batch_seconds_count{model="all-MiniLM-L6-v2"} 0.0' in fresh.http.get("/metrics").text
        patient = {"X-Request-Timeout": "120"}
        async with fresh.async_http(timeout=120, limits=httpx.Limits(max_connections=200)) as client:
            with Gate(fresh) as gate:
                running = asyncio.create_task(client.post("/embed", json={"text": "running"}))
                await asyncio.to_thread(gate.entered.wait, 60)
                backlog: list[asyncio.Task[httpx.Response]] = []
                while (batcher.expected_wait() or 0) <= 2:  # the first burst: over 2 s of work at the probed rate
                    body = {"input": [f"request {len(backlog)} text {j} " + "word " * 240 for j in range(16)]}
                    backlog.append(asyncio.create_task(client.post("/v1/embeddings", json=body, headers=patient)))
                    while batcher.queued_items < 16 * len(backlog):
                        await asyncio.sleep(0.01)
                late = await client.post("/v1/embeddings", json={"input": "late"}, headers={"X-Request-Timeout": "1"})
                assert late.status_code == 429, late.text
                assert int(late.headers["retry-after"]) >= 1
                in_time = asyncio.create_task(client.post("/v1/embeddings", json={"input": "in time"}, headers=patient))
                while batcher.queued_items < 16 * len(backlog) + 1:
                    await asyncio.sleep(0.01)
                gate.open.set()
                answers = await asyncio.gather(running, in_time, *backlog)
        assert [r.status_code for r in answers] == [200] * len(answers)
    finally:
        fresh.stop()
