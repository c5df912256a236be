"""Priority classes over HTTP: `X-Priority: bulk` marks ingestion, which runs only on the capacity queries leave.
A query waits behind at most the batch already running, never behind a bulk backlog; each class has its own queue
bound, at the door too."""

from __future__ import annotations

import asyncio

import pytest

from tests.inprocess import AppServer
from tests.server.test_admission import MODEL, Gate, small_queue  # noqa: F401  (the fixture)

BULK = {"X-Priority": "bulk"}


async def test_a_query_is_answered_before_a_bulk_backlog_queued_ahead_of_it(small_queue: AppServer) -> None:  # noqa: F811
    batcher = small_queue.app.state.host.get(MODEL, "embed").batcher
    finished: list[str] = []

    async def post(client, name: str, body: dict, headers: dict | None = None):  # type: ignore[no-untyped-def]
        response = await client.post("/v1/embeddings", json=body, headers=headers or {})
        finished.append(name)
        return response

    async with small_queue.async_http() as client:
        with Gate(small_queue) as gate:
            running = asyncio.create_task(post(client, "running", {"input": "ingest 0"}, BULK))
            await asyncio.to_thread(gate.entered.wait, 60)
            backlog = asyncio.create_task(
                post(client, "backlog", {"input": [f"ingest {i}" for i in range(1, 5)]}, BULK)
            )
            while batcher.queued_items < 4:
                await asyncio.sleep(0.01)
            # The bulk class is at its bound (4 items): more bulk work is refused at the door, in the route's shape...
            refused = await client.post("/v1/embeddings", json={"input": "ingest 5"}, headers=BULK)
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "overloaded"
            # ... while a query has a queue of its own.
            query = asyncio.create_task(post(client, "query", {"input": "what is a panda?"}))
            while batcher.queued_items < 5:
                await asyncio.sleep(0.01)
            gate.open.set()
            answers = await asyncio.gather(running, backlog, query)
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert finished == ["running", "query", "backlog"]


@pytest.mark.parametrize("value", ["urgent", ""])
def test_an_unknown_priority_is_a_400_in_the_routes_shape(small_queue: AppServer, value: str) -> None:  # noqa: F811
    response = small_queue.http.post("/v1/embeddings", json={"input": "x"}, headers={"X-Priority": value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "X-Priority" and "interactive, bulk" in error["message"]
    native = small_queue.http.post("/embed", json={"text": "x"}, headers={"X-Priority": value})
    assert native.status_code == 400 and "X-Priority" in native.json()["error"]


def test_priority_names_are_read_in_any_case(small_queue: AppServer) -> None:  # noqa: F811
    response = small_queue.http.post("/v1/embeddings", json={"input": "x"}, headers={"X-Priority": " Bulk"})
    assert response.status_code == 200, response.text
