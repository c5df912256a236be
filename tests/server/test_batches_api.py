"""OpenAI's Batch API for embeddings, through the openai client: files.create, batches.create, batches.retrieve,
files.content. Each output line's body is what a direct /v1/embeddings call answers; a bad line is a line of the
error file, not a failed job; cancel, list, limits and the metric of lines processed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from tests.inprocess import AppServer, start_app
from tests.support import connect, metric, parse_response, read_until_closed

MODEL = "all-MiniLM-L6-v2"
MAX_LINES = 200
MAX_FILE_BYTES = 2_000_000
MAX_BODY_BYTES = 100_000  # below the upload limit: uploads have their own; a line is held to this one
ENDED = ("completed", "failed", "cancelled", "expired")
BODY_READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    env = {
        "EMBEDSERVE_DATA_DIR": str(tmp_path_factory.mktemp("batch-data")),
        "EMBEDSERVE_MAX_BATCH_LINES": str(MAX_LINES),
        "EMBEDSERVE_MAX_FILE_BYTES": str(MAX_FILE_BYTES),
        "EMBEDSERVE_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "EMBEDSERVE_BATCH_CONCURRENCY": "4",
        "EMBEDSERVE_BODY_READ_TIMEOUT": str(BODY_READ_TIMEOUT),
    }
    running = start_app(None, env=env)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(batch_server: AppServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=batch_server.url + "/v1", http_client=batch_server.http, api_key="unused")


def request_line(custom_id: str, body: dict[str, Any], url: str = "/v1/embeddings") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def upload(client: openai.OpenAI, lines: list[str]) -> str:
    content = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=("requests.jsonl", content), purpose="batch").id


def wait_ended(client: openai.OpenAI, batch_id: str, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while (batch := client.batches.retrieve(batch_id)).status not in ENDED:
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)
    return batch


def jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def vectors(body: dict[str, Any]) -> np.ndarray:
    return np.array([row["embedding"] for row in body["data"]], dtype=np.float32)


def test_each_output_line_is_the_embeddings_routes_answer(client: openai.OpenAI, batch_server: AppServer) -> None:
    bodies = [{"input": f"passage number {i} about {'batching ' * (i % 5)}", "model": MODEL} for i in range(12)] + [
        {"input": ["two texts", "in one line"], "model": MODEL},
        {"input": "shorter vectors", "model": MODEL, "dimensions": 64},
        {"input": [101, 7592, 102]},
    ]
    before = metric(batch_server, "embed_batch_lines_total", status="completed")
    file_id = upload(client, [request_line(f"req-{i}", body) for i, body in enumerate(bodies)])
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h", metadata={"run": "parity"}
    )
    assert (batch.object, batch.status, batch.endpoint, batch.input_file_id) == (
        "batch",
        "validating",
        "/v1/embeddings",
        file_id,
    )
    assert batch.request_counts.total == len(bodies) and batch.metadata == {"run": "parity"}

    done = wait_ended(client, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (len(bodies), 0)
    assert done.error_file_id is None and done.completed_at and done.in_progress_at
    output = jsonl(client, done.output_file_id)
    assert [line["custom_id"] for line in output] == [f"req-{i}" for i in range(len(bodies))]  # input order
    assert len({line["id"] for line in output}) == len(output)
    for line, body in zip(output, bodies, strict=True):
        assert line["id"].startswith("batch_req_") and line["error"] is None
        response = line["response"]
        assert response["status_code"] == 200 and response["request_id"]
        direct = client.embeddings.create(**{"model": MODEL, **body}, encoding_format="float").model_dump()
        # Equal but for the float noise of running in another batch (the response cache usually makes it exact).
        np.testing.assert_allclose(vectors(response["body"]), vectors(direct), atol=1e-6, err_msg=line["custom_id"])
        assert response["body"]["usage"] == direct["usage"] and response["body"]["model"] == direct["model"]
    assert done.usage.input_tokens == sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in output)
    assert metric(batch_server, "embed_batch_lines_total", status="completed") - before == len(bodies)


def test_bad_lines_go_to_the_error_file_and_the_job_completes(client: openai.OpenAI, batch_server: AppServer) -> None:
    lines = [
        request_line("good-1", {"input": "fine", "model": MODEL}),
        "{not json",
        json.dumps(["an", "array"]),
        json.dumps({"method": "POST", "url": "/v1/embeddings", "body": {"input": "no custom_id"}}),
        request_line("wrong-url", {"input": "x", "model": MODEL}, url="/v1/chat/completions"),
        json.dumps({"custom_id": "wrong-method", "method": "GET", "url": "/v1/embeddings", "body": {"input": "x"}}),
        request_line("empty-input", {"input": [], "model": MODEL}),
        request_line("unknown-model", {"input": "x", "model": "text-embedding-3-small"}),
        request_line("too-many-dims", {"input": "x", "model": MODEL, "dimensions": 4096}),
        "",  # a blank line is no request
        request_line("huge", {"input": "word " * (MAX_BODY_BYTES // 5), "model": MODEL}),
        request_line("good-2", {"input": ["also", "fine"], "model": MODEL}),
    ]
    before = metric(batch_server, "embed_batch_lines_total", status="failed")
    file_id = upload(client, lines)
    assert client.files.retrieve(file_id).bytes == len(("\n".join(lines) + "\n").encode())
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
    assert batch.request_counts.total == 11
    done = wait_ended(client, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (11, 2, 9)
    assert [line["custom_id"] for line in jsonl(client, done.output_file_id)] == ["good-1", "good-2"]

    errors = jsonl(client, done.error_file_id)
    assert len(errors) == 9 and all(line["id"].startswith("batch_req_") for line in errors)
    by_id = {line["custom_id"]: line for line in errors if line["custom_id"] is not None}
    unparsed = [line for line in errors if line["custom_id"] is None]
    assert len(unparsed) == 4 and all(line["response"] is None for line in unparsed)
    codes = {"invalid_json_line", "missing_required_parameter", "request_too_large"}
    assert {line["error"]["code"] for line in unparsed} == codes
    assert by_id["wrong-url"]["error"]["code"] == "invalid_url" and by_id["wrong-url"]["response"] is None
    assert by_id["wrong-method"]["error"]["code"] == "invalid_method"
    # What the route itself refused: its status and its error body, as OpenAI writes them.
    for custom_id, status in (("empty-input", 400), ("unknown-model", 404), ("too-many-dims", 400)):
        line = by_id[custom_id]
        assert line["error"] is None and line["response"]["status_code"] == status, line
        error = line["response"]["body"]["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert by_id["unknown-model"]["response"]["body"]["error"]["code"] == "model_not_found"
    assert metric(batch_server, "embed_batch_lines_total", status="failed") - before == 9


def test_files_are_read_back_and_deleted(client: openai.OpenAI) -> None:
    content = (request_line("only", {"input": "x", "model": MODEL}) + "\n").encode()
    created = client.files.create(file=("mine.jsonl", content), purpose="batch")
    assert (created.object, created.purpose, created.filename, created.bytes) == (
        "file",
        "batch",
        "mine.jsonl",
        len(content),
    )
    assert client.files.retrieve(created.id) == created
    assert client.files.list(purpose="batch", limit=1).data == [created]  # newest first
    assert created.id in [f.id for f in client.files.list(order="asc", limit=2)]  # the client follows pages
    assert created.id not in [f.id for f in client.files.list(purpose="batch_output")]
    assert client.files.content(created.id).content == content
    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    assert created.id not in [f.id for f in client.files.list()]
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)


def test_refusals_in_openais_shape(client: openai.OpenAI, batch_server: AppServer) -> None:
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    file_id = upload(client, [request_line("a", {"input": "x"})])
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="fine-tune")
    answer = batch_server.http.post("/v1/files", content=b"{}", headers={"content-type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.APIStatusError) as too_large:
        client.files.create(file=("big.jsonl", b"x" * (MAX_FILE_BYTES + 1)), purpose="batch")
    assert too_large.value.status_code == 413
    # Past the line limit the job fails at once, as OpenAI's does, with the reason in `errors`.
    many = upload(client, [request_line(f"r{i}", {"input": "x"}) for i in range(MAX_LINES + 1)])
    failed = client.batches.create(input_file_id=many, endpoint="/v1/embeddings", completion_window="24h")
    assert failed.status == "failed" and failed.failed_at and failed.errors and failed.errors.data
    assert failed.errors.data[0].code == "too_many_requests"
    # Two requests with one custom_id could not be told apart in the output: the job fails at once, naming both.
    twice = upload(
        client,
        [request_line("a", {"input": "x"}), request_line("b", {"input": "y"}), request_line("a", {"input": "z"})],
    )
    failed = client.batches.create(input_file_id=twice, endpoint="/v1/embeddings", completion_window="24h")
    assert failed.status == "failed" and failed.errors and failed.errors.data
    (error,) = failed.errors.data
    assert (error.code, error.line, error.param) == ("duplicate_custom_id", 3, "custom_id")
    assert "repeats the custom_id 'a' of line 1" in (error.message or "")


def test_list_pages_newest_first(client: openai.OpenAI) -> None:
    file_id = upload(client, [request_line("a", {"input": "x"})])
    made = [
        client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h").id
        for _ in range(3)
    ]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == made[::-1][:2] and first.has_more
    second = client.batches.list(limit=2, after=first.data[-1].id)
    assert second.data[0].id == made[0]
    listed = [b.id for b in client.batches.list(limit=2)]  # the client follows `after` itself
    assert listed[:3] == made[::-1] and len(listed) == len(set(listed))
    for batch_id in made:
        wait_ended(client, batch_id)


def job_under_way(client: openai.OpenAI, prefix: str) -> Any:
    """A job of MAX_LINES slow lines (custom ids PREFIX0, PREFIX1, ...), returned once its first line has completed
    and the rest are still to run."""
    texts = [f"sentence {j} of a longer passage that takes the model a while to read" for j in range(64)]
    lines = [request_line(f"{prefix}{i}", {"input": texts, "model": MODEL}) for i in range(MAX_LINES)]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    deadline = time.monotonic() + 300
    while client.batches.retrieve(batch.id).request_counts.completed == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return batch


def test_cancel_stops_between_lines_and_keeps_what_was_written(client: openai.OpenAI, tmp_path: Path) -> None:
    batch = job_under_way(client, "c")
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = wait_ended(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at, done
    counts = done.request_counts
    assert 0 < counts.completed < counts.total and counts.failed == 0
    output = jsonl(client, done.output_file_id)
    assert [line["custom_id"] for line in output] == [f"c{i}" for i in range(counts.completed)]
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(
            wait_ended(
                client,
                client.batches.create(
                    input_file_id=upload(client, [request_line("a", {"input": "x"})]),
                    endpoint="/v1/embeddings",
                    completion_window="24h",
                ).id,
            ).id
        )


def test_an_expired_job_files_the_lines_it_did_not_reach_as_batch_expired(
    client: openai.OpenAI, batch_server: AppServer
) -> None:
    batch = job_under_way(client, "e")
    # Its window ends now (24 h cannot pass in a test): the runner reads the job's row at every step.
    batch_server.app.state.batch_store.db.execute("UPDATE batches SET expires_at = 0 WHERE id = ?", (batch.id,))
    done = wait_ended(client, batch.id)
    assert done.status == "expired" and done.expired_at, done
    counts = done.request_counts
    assert 0 < counts.completed < counts.total and counts.completed + counts.failed == counts.total
    reached = [line["custom_id"] for line in jsonl(client, done.output_file_id)]
    assert reached == [f"e{i}" for i in range(counts.completed)]
    expired = jsonl(client, done.error_file_id)
    assert [line["custom_id"] for line in expired] == [f"e{i}" for i in range(counts.completed, counts.total)]
    assert {(line["error"]["code"], line["response"]) for line in expired} == {("batch_expired", None)}


def _upload_in_pieces(batch_server: AppServer, pieces: int, piece_bytes: int, gap: float) -> tuple[int, dict]:
    """Sends a JSONL upload over a real socket in `pieces` parts of about `piece_bytes`, `gap` seconds apart."""
    lines = [request_line(f"slow-{i}", {"input": "x" * 1000, "model": MODEL}) for i in range(MAX_LINES)]
    content = ("\n".join(lines) + "\n").encode()[: pieces * piece_bytes]
    content = content[: content.rindex(b"\n") + 1]
    body = (
        b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="slow.jsonl"\r\n'
        b"Content-Type: application/jsonl\r\n\r\n" + content + b"\r\n--b--\r\n"
    )
    sock = connect(batch_server.listen(), timeout=60)
    sock.sendall(
        b"POST /v1/files HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    step = -(-len(body) // pieces)
    try:
        for start in range(0, len(body), step):
            sock.sendall(body[start : start + step])
            time.sleep(gap)
    except OSError:
        pass  # the server cut the connection: its answer is read below
    status, _, answer = parse_response(read_until_closed(sock)[0])
    return status, json.loads(answer)


def test_an_upload_slower_than_the_body_timeout_is_received_while_it_keeps_coming(batch_server: AppServer) -> None:
    # The whole file (200 lines, ~220 KB) in six pieces 0.4 s apart: 2.4 s in all against a 1 s body timeout. Each
    # piece of ~37 KB moves the deadline on by ~0.56 s at 64 KiB/s, so a steady upload is received, as a large
    # file over a slow link is.
    status, answer = _upload_in_pieces(batch_server, pieces=6, piece_bytes=48_000, gap=0.4)
    assert status == 200, answer
    assert answer["object"] == "file" and answer["purpose"] == "batch"


def test_an_upload_that_drips_is_still_cut_off_with_408(batch_server: AppServer) -> None:
    # The same pace in pieces of a few hundred bytes earns the upload almost nothing past the body timeout.
    status, answer = _upload_in_pieces(batch_server, pieces=12, piece_bytes=200, gap=0.4)
    assert status == 408, answer
    assert "not received within 1 s (uploads: plus 1 s a 64 KiB received)" in answer["error"]["message"]
