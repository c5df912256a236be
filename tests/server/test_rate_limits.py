"""No caller can starve the others: request and token rate limits per caller (per-key overrides
from the keys file) and globally, 413s for oversized requests, deadlines that end slow requests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import yaml

from embedserve.server.http.ratelimit import MemoryStore
from tests.inprocess import AppServer, start_app
from tests.support import FakeClock

# -- the bucket ---------------------------------------------------------------------------------


async def test_a_bucket_allows_a_burst_then_refills_at_its_rate() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    decisions = [await store.hit("k", rate=2, burst=3, cost=1) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[-1].retry_after == pytest.approx(0.5)
    clock.now += 0.5
    assert (await store.hit("k", rate=2, burst=3, cost=1)).allowed
    assert not (await store.hit("k", rate=2, burst=3, cost=1)).allowed
    assert (await store.hit("other", rate=2, burst=3, cost=1)).allowed  # callers do not share a bucket


async def test_a_costly_hit_waits_for_enough_tokens_and_a_refused_one_takes_nothing() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    assert (await store.hit("t", rate=10, burst=100, cost=80)).allowed
    refused = await store.hit("t", rate=10, burst=100, cost=50)
    assert not refused.allowed and refused.retry_after == pytest.approx(3.0)
    clock.now += 3.0
    assert (await store.hit("t", rate=10, burst=100, cost=50)).allowed


# -- over HTTP ----------------------------------------------------------------------------------

SLOW, TOKENS, FAST = "slow-key-0001", "tokens-key-0001", "fast-key-0001"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    folder = tmp_path_factory.mktemp("limits")
    keys_file = folder / "keys.yaml"
    keys = [
        {"key": FAST, "name": "fast"},
        {"key": SLOW, "name": "slow", "limits": {"requests_per_second": 0.2, "burst": 2}},
        {"key": TOKENS, "name": "tokens", "limits": {"tokens_per_minute": 120}},
    ]
    keys_file.write_text(yaml.safe_dump({"keys": keys}))
    env = {
        "EMBEDSERVE_API_KEYS_FILE": str(keys_file),
        "EMBEDSERVE_RATE_LIMIT_RPS": "100",
        "EMBEDSERVE_MAX_TOKENS_PER_REQUEST": "3000",
    }
    running = start_app(folder, env=env)
    yield running
    running.stop()


def post(server: AppServer, key: str, body: dict, route: str = "/v1/embeddings", **headers: str) -> httpx.Response:
    return server.http.post(f"{server.url}{route}", json=body, headers={"X-API-Key": key, **headers}, timeout=60)


def test_a_key_over_its_request_rate_gets_429_with_rate_headers(limited: AppServer) -> None:
    answers = [post(limited, SLOW, {"input": f"request {i}"}) for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["x-ratelimit-limit"] == "2"
    assert answers[1].headers["x-ratelimit-remaining"] == "0"
    refused = answers[2]
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert int(refused.headers["retry-after"]) >= 4  # 0.2 requests per second: one every 5 s
    assert refused.headers["x-ratelimit-remaining"] == "0" and int(refused.headers["x-ratelimit-reset"]) > 0
    # Another key is not affected, and gets the server-wide limit.
    fine = post(limited, FAST, {"input": "still here"})
    assert fine.status_code == 200 and fine.headers["x-ratelimit-limit"] == "100"


def test_input_tokens_per_minute_are_limited_per_key(limited: AppServer) -> None:
    sixty_tokens = "word " * 58  # + [CLS] and [SEP]
    first = post(limited, TOKENS, {"input": sixty_tokens})
    assert first.status_code == 200 and first.json()["usage"]["total_tokens"] == 60
    assert post(limited, TOKENS, {"input": sixty_tokens}).status_code == 200
    third = post(limited, TOKENS, {"input": sixty_tokens})
    assert third.status_code == 429 and "tokens per minute" in third.json()["error"]["message"]
    assert int(third.headers["retry-after"]) >= 1
    # One request larger than a whole minute's budget can never pass: 413, not 429.
    huge = post(limited, TOKENS, {"input": ["word " * 100] * 2})
    assert huge.status_code == 413 and "120 tokens per minute" in huge.json()["error"]["message"]


def test_tokens_per_request_are_limited_with_a_413_naming_the_limit(limited: AppServer) -> None:
    response = post(limited, FAST, {"input": ["word " * 200] * 20})
    assert response.status_code == 413
    assert "limit is 3000" in response.json()["error"]["message"]
    native = post(limited, FAST, {"texts": ["word " * 200] * 20}, route="/batch-embed")
    assert native.status_code == 413 and native.json()["error_type"] == "PayloadTooLarge"


async def test_a_flood_from_one_key_is_refused_at_the_door_while_another_key_is_served(limited: AppServer) -> None:
    """`slow` floods and is refused before its requests reach the model; `fast` is served throughout.
    (What the flood costs the others in latency is measured by the bench, not asserted here.)"""

    async with limited.async_http(timeout=60) as client:

        async def served(key: str) -> None:
            response = await client.post("/v1/embeddings", json={"input": "a query"}, headers={"X-API-Key": key})
            assert response.status_code == 200

        async def flood() -> list[int]:
            codes = []
            for _ in range(100):
                r = await client.post("/v1/embeddings", json={"input": "flood"}, headers={"X-API-Key": SLOW})
                codes.append(r.status_code)
            return codes

        flooding = [asyncio.create_task(flood()) for _ in range(8)]
        for _ in range(10):
            await served(FAST)
        codes = [c for task in flooding for c in await task]
    assert codes.count(429) >= 790  # the flood is refused before it reaches the model


def test_a_request_past_its_deadline_gets_504_and_its_work_is_dropped(limited: AppServer) -> None:
    # ~3000 tokens, seconds of work here; distinct, or the response cache would compute one passage.
    passages = [f"passage {i}: " + "the quick brown fox jumps over the lazy dog " * 25 for i in range(12)]
    late = post(limited, FAST, {"input": passages}, **{"X-Request-Timeout": "0.2"})
    assert late.status_code == 504
    assert "deadline of 0.2 s" in late.json()["error"]["message"]
    assert 'reason="deadline"' in limited.http.get(f"{limited.url}/metrics").text
    assert post(limited, FAST, {"input": "after"}).status_code == 200
    bad = post(limited, FAST, {"input": "x"}, **{"X-Request-Timeout": "soon"})
    assert bad.status_code == 400 and "X-Request-Timeout" in bad.json()["error"]["message"]
