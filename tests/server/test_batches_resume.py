"""A batch job survives its server: stopped cleanly (the lifespan ends between lines) or killed with SIGKILL in
the middle of a job, a server started again on the same data dir resumes it, and every line is in the output
exactly once, with the embedding a direct call gives."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.inprocess import start_app
from tests.support import start_server, stop_server

MODEL = "all-MiniLM-L6-v2"
TEXTS_PER_LINE = 8


def lines_file(count: int) -> tuple[bytes, dict[str, list[str]]]:
    """A JSONL input of `count` lines of distinct texts, and each line's texts by custom_id."""
    texts = {
        f"line-{i}": [
            f"passage {i}.{j}: notes on item {i * TEXTS_PER_LINE + j} of the ingest" for j in range(TEXTS_PER_LINE)
        ]
        for i in range(count)
    }
    body = b"".join(
        json.dumps(
            {"custom_id": cid, "method": "POST", "url": "/v1/embeddings", "body": {"input": t, "model": MODEL}}
        ).encode()
        + b"\n"
        for cid, t in texts.items()
    )
    return body, texts


def create_job(http: httpx.Client, content: bytes) -> str:
    uploaded = http.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    assert uploaded.status_code == 200, uploaded.text
    batch = http.post(
        "/v1/batches",
        json={"input_file_id": uploaded.json()["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"},
    )
    assert batch.status_code == 200, batch.text
    return batch.json()["id"]


def poll(http: httpx.Client, batch_id: str, until: Any, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch = http.get(f"/v1/batches/{batch_id}").json()
        if until(batch):
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.02)


def mid_way(batch: dict[str, Any]) -> bool:
    counts = batch["request_counts"]
    assert batch["status"] in ("validating", "in_progress"), batch  # not over before we stop it
    return 0 < counts["completed"] < counts["total"]


def check_output(http: httpx.Client, batch: dict[str, Any], texts: dict[str, list[str]]) -> None:
    """Every line once, in input order, each with its texts' embeddings as /v1/embeddings gives them now."""
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": len(texts), "completed": len(texts), "failed": 0}
    assert batch["error_file_id"] is None
    content = http.get(f"/v1/files/{batch['output_file_id']}/content")
    assert content.status_code == 200
    output = [json.loads(line) for line in content.text.splitlines()]
    assert [line["custom_id"] for line in output] == list(texts)  # none lost, none twice, in order
    assert len({line["id"] for line in output}) == len(output)
    every = [text for line in texts.values() for text in line]
    expected: list[list[float]] = []
    for start in range(0, len(every), 1024):
        answer = http.post("/v1/embeddings", json={"input": every[start : start + 1024], "model": MODEL})
        expected += [row["embedding"] for row in answer.json()["data"]]
    got = [row["embedding"] for line in output for row in line["response"]["body"]["data"]]
    np.testing.assert_allclose(np.array(got, np.float32), np.array(expected, np.float32), atol=1e-5)


def test_a_job_stopped_between_lines_resumes_at_the_next_start(tmp_path: Path) -> None:
    env = {
        "EMBEDSERVE_DATA_DIR": str(tmp_path / "data"),
        "EMBEDSERVE_CACHE_BYTES": "0",
        "EMBEDSERVE_BATCH_CONCURRENCY": "2",
    }
    content, texts = lines_file(150)
    first = start_app(None, env=env)
    try:
        batch_id = create_job(first.http, content)
        poll(first.http, batch_id, mid_way)
    finally:
        first.stop()  # the lifespan ends: the runner stops between lines
    second = start_app(None, env=env, ready=False)  # its job resumes while the model loads, and waits for it
    try:
        stopped = second.http.get(f"/v1/batches/{batch_id}").json()
        assert stopped["status"] == "in_progress" and 0 < stopped["request_counts"]["completed"] < len(texts)
        done = poll(second.http, batch_id, lambda b: b["status"] in ("completed", "failed", "cancelled", "expired"))
        second.wait_ready()
        check_output(second.http, done, texts)
    finally:
        second.stop()


@pytest.mark.timeout(900)
def test_a_job_survives_sigterm_and_sigkill_mid_way_with_no_line_lost_or_twice(tmp_path: Path) -> None:
    """SIGTERM drains: the runner stops between lines and the process exits 0. SIGKILL gives no chance at all: the
    next start cuts what was written past the last record and runs those lines again."""
    env = {"EMBEDSERVE_DATA_DIR": str(tmp_path / "data"), "EMBEDSERVE_CACHE_BYTES": "0"}
    content, texts = lines_file(200)
    server = start_server(tmp_path, env=env)
    try:
        batch_id = create_job(server.http, content)
        poll(server.http, batch_id, mid_way)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0, server.log()[-3000:]
    finally:
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()[-3000:]

    again = start_server(tmp_path, env=env)
    try:
        resumed = again.http.get(f"/v1/batches/{batch_id}").json()
        assert 0 < resumed["request_counts"]["completed"] < len(texts), resumed
        poll(
            again.http,
            batch_id,
            lambda b: mid_way(b) and b["request_counts"]["completed"] > resumed["request_counts"]["completed"],
        )
        again.process.send_signal(signal.SIGKILL)
        again.process.wait(30)
    finally:
        stop_server(again)

    last = start_server(tmp_path, env=env)
    try:
        done = poll(last.http, batch_id, lambda b: b["status"] in ("completed", "failed", "cancelled", "expired"))
        check_output(last.http, done, texts)
    finally:
        stop_server(last)
