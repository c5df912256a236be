"""The Batch API's parts on their own: the streaming multipart reader (whatever the chunking), the store's upload
(temp file, then rename; line counts), and a line's run through the route: bulk priority, as the job's owner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from embedserve.server.api.common import call_model
from embedserve.server.api.openai_schemas import EmbeddingsRequest
from embedserve.server.batches.lines import Route, answer
from embedserve.server.batches.multipart import Data, MultipartError, Part, boundary_of, parts
from embedserve.server.batches.store import Progress, Store
from embedserve.server.http.responses import json_response
from embedserve.server.serving.seam import Call

BOUNDARY = b"----embedserve-test-boundary"


def form(*fields: tuple[str, str | None, bytes]) -> bytes:
    body = b""
    for name, filename, content in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition.encode() + b"\r\n"
        body += b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n"
    return b"preamble\r\n" + body + b"--" + BOUNDARY + b"--\r\nepilogue"


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def read(body: bytes, size: int) -> list[tuple[str, str | None, bytes]]:
    async def collect() -> list[tuple[str, str | None, bytes]]:
        found: list[tuple[str, str | None, bytes]] = []
        async for item in parts(_chunks(body, size), BOUNDARY):
            if isinstance(item, Part):
                found.append((item.name, item.filename, b""))
            else:
                assert isinstance(item, Data) and item.data
                name, filename, content = found[-1]
                found[-1] = (name, filename, content + item.data)
        return found

    return asyncio.run(collect())


# Content that looks like the delimiter, in part or whole but for its last byte, must come through as content.
TRICKY = b"line\r\n--" + BOUNDARY[:-1] + b"\r\n\r\n--" + BOUNDARY[:5] + b"\n" * 3


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 31, 64, 1024, 1 << 20])
def test_multipart_parts_whatever_the_chunking(size: int) -> None:
    fields = [("purpose", None, b"batch"), ("file", "in.jsonl", TRICKY * 5), ("empty", None, b"")]
    assert read(form(*fields), size) == fields


@pytest.mark.parametrize(
    "body",
    [b"", b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data\r\n\r\nx\r\n--" + BOUNDARY + b"--", form()[:-20]],
)
def test_multipart_refuses_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MultipartError):
        read(body, 8)


def test_multipart_boundary_from_the_content_type() -> None:
    assert boundary_of('multipart/form-data; boundary="a b"') == b"a b"
    assert boundary_of("Multipart/Form-Data; charset=utf-8; boundary=xyz") == b"xyz"
    for wrong in (None, "application/json", "multipart/form-data"):
        with pytest.raises(MultipartError):
            boundary_of(wrong)


def test_an_upload_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    upload = store.upload("key:a", "batch", "in.jsonl")
    for piece in (b'{"a": 1}\n\n  \n{"b"', b": 2}\r\n", b"\n", b'{"c": 3}'):
        upload.write(piece)
    assert not upload.path.exists() and upload.temp.exists()
    upload.seal()
    assert upload.path.read_bytes() == b'{"a": 1}\n\n  \n{"b": 2}\r\n\n{"c": 3}' and not upload.temp.exists()
    row = store.add_file(upload.owner, upload.purpose, upload.filename, upload.path, upload.id, lines=upload.lines)
    assert (row.lines, row.bytes) == (3, upload.bytes)  # blank lines are no requests
    assert store.file(row.id, "key:a") == row and store.file(row.id, "key:b") is None

    left = store.upload("key:a", "batch", "cut.jsonl")  # a kill mid-upload leaves a temp file: the next open clears it
    left.write(b"half")
    store.close()
    Store(tmp_path / "data").db  # noqa: B018
    assert not left.temp.exists() and not left.path.exists()


class _App:
    class state:  # noqa: N801
        class settings:  # noqa: N801
            max_request_timeout = 123.0
            request_timeout = 30.0


def test_a_line_runs_at_bulk_priority_as_its_owner() -> None:
    seen: list[Call] = []

    async def endpoint(body: EmbeddingsRequest, request: Request) -> Response:
        async def record(call: Call) -> None:
            seen.append(call)

        await call_model(request, record)
        return json_response({"input": body.input})

    async def run() -> Any:
        return await answer(_App(), Route("/v1/embeddings", EmbeddingsRequest, endpoint), {"input": "hi"}, "key:a")  # type: ignore[arg-type]

    result = asyncio.run(run())
    assert (result.status, result.body) == (200, {"input": "hi"})
    (call,) = seen
    assert (call.priority, call.caller, call.within) == ("bulk", "key:a", 123.0)

    invalid = asyncio.run(answer(_App(), Route("/v1/embeddings", EmbeddingsRequest, endpoint), {"input": 3}, "key:a"))  # type: ignore[arg-type]
    assert invalid.status == 400 and invalid.body["error"]["param"] == "input"


def test_a_restart_cuts_what_a_kill_left_past_the_recorded_progress(tmp_path: Path) -> None:
    """The kill that comes between a group's write and its record: the bytes past the record are cut away, so
    the lines they held are written once, when they run again."""
    store = Store(tmp_path / "data")
    upload = store.upload("", "batch", "in.jsonl")
    upload.write(b'{"x": 1}\n{"x": 2}\n')
    upload.seal()
    source = store.add_file("", "batch", "in.jsonl", upload.path, upload.id, lines=upload.lines)
    job = store.create_batch("", source, "/v1/embeddings", "24h", None, window_seconds=60)
    output, errors = store.resume_files(job)
    output.write_bytes(b"line one\n")
    errors.write_bytes(b"")
    store.advance(job.id, Progress(1, 9, len(b"line one\n"), 0, 1, 0, 5))
    with open(output, "ab") as handle:  # written, fsynced, then killed before the record
        handle.write(b"line two\n")
    with open(errors, "ab") as handle:
        handle.write(b"half an error li")
    recorded = store.batch(job.id)
    assert recorded is not None and (recorded.next_line, recorded.input_offset, recorded.completed) == (1, 9, 1)
    store.resume_files(recorded)
    assert output.read_bytes() == b"line one\n" and errors.read_bytes() == b""


def test_the_first_repeated_custom_id_is_found_past_lines_that_are_not_requests(tmp_path: Path) -> None:
    from embedserve.server.batches.runner import first_repeated_custom_id

    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b'{"custom_id": "a"}\n\nnot json\n[1, 2]\n{"custom_id": 1}\n{"custom_id": "1"}\n{"custom_id": 1}\n'
    )
    assert first_repeated_custom_id(path) == (7, 1, 5)  # 1 and "1" are two ids; blank and bad lines are skipped
    path.write_bytes(b'{"custom_id": "a"}\n{"custom_id": "b"}\n')
    assert first_repeated_custom_id(path) is None
