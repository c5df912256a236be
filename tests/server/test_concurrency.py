"""Many clients at once: each gets exactly its own embeddings back, in its own order."""

from __future__ import annotations

import asyncio
import random

import numpy as np

from tests.inprocess import AppServer
from tests.support import cosine_rows

WORDS = "search engine vector query passage model batch token server latency memory answer question river city".split()


def mixed_texts(rng: random.Random, count: int) -> list[str]:
    texts = []
    for i in range(count):
        length = rng.choice([3, 5, 8, 12, 40, 120, 300])
        texts.append(f"{i} " + " ".join(rng.choice(WORDS) for _ in range(length)))
    return texts


async def test_200_concurrent_clients_each_get_their_own_embeddings(server: AppServer, reference_model) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    requests = [mixed_texts(rng, rng.randint(1, 4)) for _ in range(200)]
    unique = sorted({t for texts in requests for t in texts})
    reference = dict(zip(unique, reference_model.encode(unique, normalize_embeddings=True, batch_size=16)))

    # Every request queues behind the whole load on one model: its deadline scales with what is sent (a
    # second per text, far below any machine's speed), up to the most a client may ask for.
    deadline = min(float(sum(map(len, requests))), server.app.state.settings.max_request_timeout)
    headers = {"X-Request-Timeout": str(deadline)}

    async with server.async_http(timeout=deadline + 30) as client:

        async def one(texts: list[str]) -> tuple[list[str], dict]:
            response = await client.post("/v1/embeddings", json={"input": texts}, headers=headers)
            assert response.status_code == 200, response.text
            return texts, response.json()

        results = await asyncio.gather(*(one(texts) for texts in requests))

    for texts, body in results:
        assert [d["index"] for d in body["data"]] == list(range(len(texts)))
        got = np.array([d["embedding"] for d in body["data"]])
        want = np.array([reference[t] for t in texts])
        assert cosine_rows(got, want).min() >= 0.9999
