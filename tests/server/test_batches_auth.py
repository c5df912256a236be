"""The Batch API takes the same keys as every route, and a key sees only its own files and jobs: another's are a
404, as an id that does not exist, and its list holds only its own."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.inprocess import AppServer, start_app

KEY_A = "team-a-key-0001"
KEY_B = "team-b-key-0002"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    env = {"EMBEDSERVE_API_KEYS": f"{KEY_A},{KEY_B}", "EMBEDSERVE_DATA_DIR": str(tmp_path_factory.mktemp("data"))}
    running = start_app(None, env=env)
    yield running
    running.stop()


def client(server: AppServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", http_client=server.http, api_key=key)


def test_a_key_sees_only_its_own_files_and_batches(guarded: AppServer) -> None:
    a, b = client(guarded, KEY_A), client(guarded, KEY_B)
    line = json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {"input": "hello"}})
    file_a = a.files.create(file=("a.jsonl", line.encode() + b"\n"), purpose="batch")
    batch_a = a.batches.create(input_file_id=file_a.id, endpoint="/v1/embeddings", completion_window="24h")

    for call in (
        lambda: b.files.retrieve(file_a.id),
        lambda: b.files.content(file_a.id),
        lambda: b.files.delete(file_a.id),
        lambda: b.batches.retrieve(batch_a.id),
        lambda: b.batches.cancel(batch_a.id),
        lambda: b.batches.create(input_file_id=file_a.id, endpoint="/v1/embeddings", completion_window="24h"),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert [batch.id for batch in b.batches.list()] == [] and [f.id for f in b.files.list()] == []
    own = [f.id for f in a.files.list()]  # its input, and the job's output once the job (one line) has finished
    assert file_a.id in own and set(own) <= {file_a.id, a.batches.retrieve(batch_a.id).output_file_id}
    assert [batch.id for batch in a.batches.list()] == [batch_a.id]

    deadline = time.monotonic() + 120
    while (done := a.batches.retrieve(batch_a.id)).status != "completed":
        assert time.monotonic() < deadline, done
        time.sleep(0.1)
    assert done.output_file_id is not None
    assert len(a.files.content(done.output_file_id).text.splitlines()) == 1
    with pytest.raises(openai.NotFoundError):  # the job's output is its owner's too
        b.files.content(done.output_file_id)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/files"), ("GET", "/v1/files/file-x"), ("POST", "/v1/batches"), ("GET", "/v1/batches")],
)
def test_no_key_no_entry(guarded: AppServer, method: str, path: str) -> None:
    answer = guarded.http.request(method, path)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
    wrong = guarded.http.request(method, path, headers={"Authorization": "Bearer not-a-key-at-all"})
    assert wrong.status_code == 401
    assert isinstance(answer, httpx.Response)


def test_a_jobs_lines_run_under_its_owners_token_limits(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("limited")
    keys = folder / "keys.yaml"
    keys.write_text(
        "keys:\n"
        f"  - {{key: {KEY_A}, name: small, limits: {{tokens_per_minute: 12}}}}\n"
        f"  - {{key: {KEY_B}, name: large}}\n"
    )
    env = {"EMBEDSERVE_API_KEYS_FILE": str(keys), "EMBEDSERVE_DATA_DIR": str(folder / "data")}
    server = start_app(None, env=env)
    try:
        long_text = "a sentence long enough to need more than twelve tokens of the model's vocabulary to encode"
        lines = [
            json.dumps({"custom_id": "long", "method": "POST", "url": "/v1/embeddings", "body": {"input": long_text}}),
        ]
        outcomes = {}
        for key in (KEY_A, KEY_B):  # the same line: past the small key's minute, within the large key's
            own = client(server, key)
            upload = own.files.create(file=("in.jsonl", "\n".join(lines).encode() + b"\n"), purpose="batch")
            batch = own.batches.create(input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h")
            deadline = time.monotonic() + 120
            while (done := own.batches.retrieve(batch.id)).status != "completed":
                assert time.monotonic() < deadline, done
                time.sleep(0.1)
            outcomes[key] = done
        small, large = outcomes[KEY_A], outcomes[KEY_B]
        assert (small.request_counts.completed, small.request_counts.failed) == (0, 1)
        (error,) = [
            json.loads(line) for line in client(server, KEY_A).files.content(small.error_file_id).text.splitlines()
        ]
        assert error["response"]["status_code"] == 413
        assert error["response"]["body"]["error"]["code"] == "too_many_tokens"
        assert "more than the limit of 12 tokens per minute" in error["response"]["body"]["error"]["message"]
        assert (large.request_counts.completed, large.request_counts.failed) == (1, 0)
    finally:
        server.stop()
