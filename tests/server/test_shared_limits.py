"""Rate limits shared by replicas through a real Redis on loopback (the one `make install` brings), and kept
(per replica) when Redis goes away."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import AppServer, start_app
from tests.support import free_port


def _replica(folder: Path, redis_url: str) -> AppServer:
    env = {
        "EMBEDSERVE_REDIS_URL": redis_url,
        "EMBEDSERVE_API_KEYS": "shared-key-0001,other-key-0001",
        "EMBEDSERVE_RATE_LIMIT_RPS": "0.05",
        "EMBEDSERVE_RATE_LIMIT_BURST": "4",
    }
    return start_app(folder, env=env)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[tuple[AppServer, AppServer]]:
    a = _replica(tmp_path_factory.mktemp("replica-a"), redis_url)
    b = _replica(tmp_path_factory.mktemp("replica-b"), redis_url)
    yield a, b
    a.stop()
    b.stop()


def embed(server: AppServer, key: str) -> int:
    response = server.http.post(
        f"{server.url}/v1/embeddings", json={"input": "hi"}, headers={"X-API-Key": key}, timeout=30
    )
    return response.status_code


def test_two_replicas_share_one_budget(replicas: tuple[AppServer, AppServer]) -> None:
    a, b = replicas
    codes = [embed(server, "shared-key-0001") for server in (a, b, a, b, a, b)]
    assert codes == [200, 200, 200, 200, 429, 429]  # a burst of 4 for the key, across both replicas
    assert embed(b, "other-key-0001") == 200


def test_without_redis_each_replica_keeps_limiting_on_its_own(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    server = _replica(tmp_path_factory.mktemp("no-redis"), closed)
    try:
        codes = [embed(server, "shared-key-0001") for _ in range(5)]
        assert codes == [200, 200, 200, 200, 429]
        metrics = server.http.get(f"{server.url}/metrics").text
        assert "embed_ratelimit_redis_degraded 1.0" in metrics
        assert "redis unreachable" in server.log()
    finally:
        server.stop()
