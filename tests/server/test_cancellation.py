"""A client that goes away takes its not-yet-started work with it."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.inprocess import AppServer
from tests.support import metric

MODEL = "all-MiniLM-L6-v2"


async def test_disconnected_clients_items_are_dropped(server: AppServer) -> None:
    # 2048 passages of about 250 tokens: half a million tokens, many seconds of work on this machine.
    passages = [f"passage {i} " + "the quick brown fox jumps over the lazy dog " * 25 for i in range(2048)]
    before = metric(server, "embed_tokens_total", model=MODEL)
    # Over a real socket: what the server sees is the client closing its connection.
    async with httpx.AsyncClient(base_url=server.listen(), timeout=120) as client:
        task = asyncio.create_task(client.post("/v1/embeddings", json={"input": passages}))
        deadline = time.monotonic() + 120  # only turns a hang into a failure
        while metric(server, "embed_queue_items", model=MODEL) == 0:  # wait until its items are queued
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.05)
        task.cancel()  # closes the connection
        await asyncio.gather(task, return_exceptions=True)
        # The server notices the closed connection and drops the request's queued items, without
        # running them (were they run, the queue would take the whole half-million tokens to empty).
        while metric(server, "embed_queue_items", model=MODEL) > 0:
            assert time.monotonic() < deadline, "the abandoned items stayed queued"
            await asyncio.sleep(0.05)
        after = await client.post("/v1/embeddings", json={"input": "next client"})
    assert after.status_code == 200
    processed = metric(server, "embed_tokens_total", model=MODEL) - before
    assert processed < 0.5 * 2048 * 250, f"{processed} tokens processed for a client that left"
