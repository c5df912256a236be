"""The response cache: a repeated item is answered without computing it, equal bit for bit to a
recomputation; a hit never crosses models, prompts, token limits or weight versions; identical items in
flight compute once; replicas share it through Redis and keep serving when Redis is gone."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedserve.models.fingerprint import folder_fingerprint
from embedserve.server.serving.cache import ENTRY_OVERHEAD, LocalCache
from tests.inprocess import AppServer, start_app
from tests.support import free_port, metric

MINILM = "all-MiniLM-L6-v2"


def hits(server: AppServer, model: str = MINILM) -> float:
    return metric(server, "embed_cache_requests_total", model=model, result="hit")


def misses(server: AppServer, model: str = MINILM) -> float:
    return metric(server, "embed_cache_requests_total", model=model, result="miss")


def vectors(server: AppServer, texts: list[str], **options: object) -> np.ndarray:
    body = server.http.post("/v1/embeddings", json={"model": MINILM, "input": texts, **options}).json()
    return np.array([row["embedding"] for row in body["data"]], dtype=np.float32)


@pytest.fixture(scope="module")
def cached(tiny_gemma3_dir: Path) -> Iterator[AppServer]:
    running = start_app(None, "--model", MINILM, "--model", f"gemma={tiny_gemma3_dir}")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def uncached() -> Iterator[AppServer]:
    running = start_app(None, "--model", MINILM, env={"EMBEDSERVE_CACHE_BYTES": "0"})
    yield running
    running.stop()


def test_a_hit_equals_a_recomputation_bit_for_bit_and_is_still_billed(cached: AppServer, uncached: AppServer) -> None:
    text = "Caches answer repeated questions."
    first = cached.http.post("/v1/embeddings", json={"model": MINILM, "input": text}).json()
    before = (hits(cached), misses(cached))
    again = cached.http.post("/v1/embeddings", json={"model": MINILM, "input": text}).json()
    assert (hits(cached), misses(cached)) == (before[0] + 1, before[1])
    recomputed = uncached.http.post("/v1/embeddings", json={"model": MINILM, "input": text}).json()
    assert first["data"][0]["embedding"] == again["data"][0]["embedding"] == recomputed["data"][0]["embedding"]
    assert first["usage"] == again["usage"] == recomputed["usage"]  # a cached token is still a billed token
    assert metric(uncached, "embed_cache_requests_total", model=MINILM, result="miss") == 0  # off: no lookups


def test_options_apply_after_the_lookup(cached: AppServer) -> None:
    full = vectors(cached, ["Matryoshka cuts after the cache."])
    before = misses(cached)
    cut = vectors(cached, ["Matryoshka cuts after the cache."], dimensions=64)
    raw = cached.http.post(
        "/batch-embed", json={"model": MINILM, "texts": ["Matryoshka cuts after the cache."], "normalize": False}
    )
    assert misses(cached) == before  # both answered from the first request's item
    np.testing.assert_allclose(cut[0], full[0, :64] / np.linalg.norm(full[0, :64]), atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(raw.json()["embeddings"][0]) / np.linalg.norm(raw.json()["embeddings"][0]), full[0], atol=1e-6
    )


def test_only_the_misses_of_a_request_are_queued(cached: AppServer) -> None:
    vectors(cached, ["already here"])
    before = (hits(cached), misses(cached))
    both = vectors(cached, ["already here", "not yet here", "not yet here"])
    assert (hits(cached) - before[0], misses(cached) - before[1]) == (2, 1)  # the repeat within it is a hit too
    np.testing.assert_array_equal(both[1], both[2])


def test_a_hit_never_crosses_models_or_prompts(cached: AppServer) -> None:
    text = "the same words"
    vectors(cached, [text])
    before = misses(cached, "gemma")
    for prompt in (None, "query", "document"):
        options = {"model": "gemma", "input": text} | ({"prompt_name": prompt} if prompt else {})
        assert cached.http.post("/v1/embeddings", json=options).status_code == 200
    assert misses(cached, "gemma") == before + 3  # another model, and each prompt its own tokens


async def test_identical_items_in_flight_are_computed_once(cached: AppServer) -> None:
    text = "eight clients ask the same new question at once"
    before = (hits(cached), misses(cached))
    async with cached.async_http() as client:
        replies = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"model": MINILM, "input": text}) for _ in range(8))
        )
    answers = [reply.json()["data"][0]["embedding"] for reply in replies]
    assert all(answer == answers[0] for answer in answers)
    assert (hits(cached) - before[0], misses(cached) - before[1]) == (7, 1)


def test_rerank_scores_are_cached_per_pair(several_models: AppServer) -> None:
    body = {"model": "rr", "query": "where are the books?", "documents": ["in the library", "on the moon"]}
    first = several_models.http.post("/v1/rerank", json=body).json()
    before = hits(several_models, "rr")
    again = several_models.http.post("/v1/rerank", json=body | {"documents": ["on the moon", "in the library"]}).json()
    assert hits(several_models, "rr") == before + 2
    assert {r["relevance_score"] for r in first["results"]} == {r["relevance_score"] for r in again["results"]}


def test_a_changed_weight_file_changes_the_models_identity(tmp_path: Path, tiny_bert_dir: Path) -> None:
    copy = Path(shutil.copytree(tiny_bert_dir, tmp_path / "bert"))
    assert folder_fingerprint(copy) == folder_fingerprint(tiny_bert_dir)
    weights = next(copy.rglob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert folder_fingerprint(copy) != folder_fingerprint(tiny_bert_dir)
    assert folder_fingerprint("sentence-transformers/all-MiniLM-L6-v2") is None  # a hub id: not cached


def test_the_local_tier_evicts_the_least_recently_used_within_its_bytes() -> None:
    row = np.zeros(4, dtype=np.float32)
    cache = LocalCache(max_bytes=3 * (row.nbytes + ENTRY_OVERHEAD))
    for key in (b"a", b"b", b"c"):
        cache.put(key, row)
    assert cache.get(b"a") is not None  # now the most recently used
    cache.put(b"d", row)
    assert cache.get(b"b") is None and cache.get(b"a") is not None and len(cache) == 3 and cache.evictions == 1
    assert cache.bytes == 3 * (row.nbytes + ENTRY_OVERHEAD)
    cache.put(b"huge", np.zeros(10_000, dtype=np.float32))  # larger than the whole cache: not kept
    assert cache.get(b"huge") is None and len(cache) == 3


def test_replicas_share_the_cache_through_redis_and_a_new_weight_version_misses(
    redis_url: str, tmp_path: Path, tiny_bert_dir: Path
) -> None:
    folder = Path(shutil.copytree(tiny_bert_dir, tmp_path / "bert"))
    env = {"EMBEDSERVE_REDIS_URL": redis_url}
    first = start_app(None, "--model", f"bert={folder}", env=env)
    second = start_app(None, "--model", f"bert={folder}", env=env)
    try:
        body = {"model": "bert", "input": ["shared between replicas"]}
        want = first.http.post("/v1/embeddings", json=body).json()["data"][0]["embedding"]
        writes = first.app.state.host.cache.shared._writes  # the shared tier is written in the background
        deadline = time.monotonic() + 30  # only turns a hang into a failure
        while writes:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        before = (hits(second, "bert"), misses(second, "bert"))
        got = second.http.post("/v1/embeddings", json=body).json()["data"][0]["embedding"]
        assert got == want and (hits(second, "bert"), misses(second, "bert")) == (before[0] + 1, before[1])
    finally:
        first.stop()
        second.stop()
    weights = next(folder.rglob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    changed = start_app(None, "--model", f"bert={folder}", env=env)
    try:
        changed.http.post("/v1/embeddings", json=body)
        assert misses(changed, "bert") == 1 and hits(changed, "bert") == 0
    finally:
        changed.stop()


def test_without_redis_the_cache_is_per_replica_and_requests_never_fail(tiny_bert_dir: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    running = start_app(None, "--model", f"bert={tiny_bert_dir}", env={"EMBEDSERVE_REDIS_URL": dead})
    try:
        for _ in range(2):
            answer = running.http.post("/v1/embeddings", json={"model": "bert", "input": "still served"})
            assert answer.status_code == 200
        assert metric(running, "embed_cache_redis_degraded") == 1
        assert hits(running, "bert") == 1  # the local tier answered the repeat
    finally:
        running.stop()
