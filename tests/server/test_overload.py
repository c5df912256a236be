"""Backpressure: past the queue bound, requests are refused at once; accepted ones still complete."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.inprocess import AppServer, start_app
from tests.support import cosine_rows, metric


@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    running = start_app(tmp_path_factory.mktemp("overload"), "--max-queue-items", "8", "--max-batch-size", "4")
    yield running
    running.stop()


async def test_excess_requests_get_429_and_accepted_ones_complete(
    small_queue_server: AppServer, reference_model
) -> None:  # type: ignore[no-untyped-def]
    texts = [f"request {i}: " + "words to embed " * 30 for i in range(120)]
    reference = reference_model.encode(texts, normalize_embeddings=True)

    async with small_queue_server.async_http(timeout=120, limits=httpx.Limits(max_connections=120)) as client:
        responses = await asyncio.gather(*(client.post("/v1/embeddings", json={"input": [t, t]}) for t in texts))

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}
    assert statuses.count(429) > 0, "a queue of 8 items cannot hold 240"
    assert statuses.count(200) > 0
    for i, response in enumerate(responses):
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"]["type"] == "rate_limit_error"
        else:
            got = np.array([d["embedding"] for d in response.json()["data"]])
            assert cosine_rows(got, np.stack([reference[i], reference[i]])).min() >= 0.9999

    # Refused at the door (no model named yet) or by the model's batcher: counted as overload either way.
    assert metric(small_queue_server, "embed_rejections_total", reason="overload") == statuses.count(429)
    # Once the burst is over, the server serves normally.
    assert small_queue_server.http.post(f"{small_queue_server.url}/embed", json={"text": "after"}).status_code == 200
