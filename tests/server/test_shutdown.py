"""SIGTERM under load: the server stops accepting, finishes every accepted request, and exits 0."""

from __future__ import annotations

import asyncio
import re
import signal
import time

import httpx
import numpy as np

from tests.support import start_server


async def test_sigterm_under_load_completes_every_accepted_request(tmp_path, reference_model) -> None:  # type: ignore[no-untyped-def]
    server = start_server(tmp_path)
    # Seconds of work, so the signal lands while most of it is still queued or running.
    texts = [f"request {i}: " + "the quick brown fox jumps over the lazy dog " * (4 + i % 20) for i in range(160)]
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            tasks = [asyncio.create_task(client.post("/v1/embeddings", json={"input": t})) for t in texts]
            # Wait until the server has work queued or running, so the signal lands mid-load.
            deadline = time.monotonic() + 60  # only turns a hang into a failure
            while not _busy((await client.get("/metrics")).text):
                assert time.monotonic() < deadline and not all(task.done() for task in tasks)
                await asyncio.sleep(0.02)
            server.process.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*tasks, return_exceptions=True)
        exit_code = await asyncio.to_thread(server.process.wait, 60)
    finally:
        if server.process.poll() is None:
            server.process.kill()
    accepted = [(t, r) for t, r in zip(texts, responses) if isinstance(r, httpx.Response)]
    assert len(accepted) == len(texts), [r for r in responses if not isinstance(r, httpx.Response)]
    assert all(r.status_code == 200 for _, r in accepted), [r.text for _, r in accepted if r.status_code != 200]
    got = np.array([r.json()["data"][0]["embedding"] for _, r in accepted])
    expected = reference_model.encode([t for t, _ in accepted], normalize_embeddings=True)
    assert np.min(np.sum(got * expected, axis=1)) >= 0.9999
    assert exit_code == 0, server.log()[-2000:]


async def test_requests_still_running_when_the_grace_runs_out_get_a_503_in_the_routes_shape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Far more work than a second of grace allows: 48 requests of 16 passages of ~200 tokens.
    server = start_server(tmp_path, env={"EMBEDSERVE_SHUTDOWN_GRACE_SECONDS": "1"})
    # Distinct texts: repeats would be computed once (the response cache) and leave the model idle.
    bodies = [{"input": [f"request {i} text {j} " + "word " * 200 for j in range(16)]} for i in range(48)]
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            headers = {"X-Request-Timeout": "120"}  # their own deadlines are far away: only the grace ends them
            tasks = [asyncio.create_task(client.post("/v1/embeddings", json=body, headers=headers)) for body in bodies]
            deadline = time.monotonic() + 60  # only turns a hang into a failure
            while not _busy((await client.get("/metrics")).text):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            server.process.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(server.process.wait, 60)
    finally:
        if server.process.poll() is None:
            server.process.kill()
    answered = [r for r in responses if isinstance(r, httpx.Response)]
    assert len(answered) == len(responses), [r for r in responses if not isinstance(r, httpx.Response)]
    statuses = sorted({r.status_code for r in answered})
    assert set(statuses) <= {200, 503}, statuses
    refused = [r for r in answered if r.status_code == 503]
    assert refused, "the grace was meant to run out with work left"
    for response in refused:
        error = response.json()["error"]
        assert error["type"] == "server_error" and error["code"] == "shutting_down", error
        assert "shutting down" in error["message"]
    assert "Traceback" not in server.log(), server.log()[-3000:]


def _busy(metrics: str) -> bool:
    """Whether the server holds queued items or has begun a batch."""
    queued = re.search(r'^embed_queue_items\{model="all-MiniLM-L6-v2"\} (\S+)$', metrics, re.M)
    batches = re.search(r'^embed_batch_seconds_count\{model="all-MiniLM-L6-v2"\} (\S+)$', metrics, re.M)
    return bool(queued and float(queued[1]) > 0) or bool(batches and float(batches[1]) > 0)
