"""OpenAI's Files and Batch API for embeddings: upload a JSONL file of /v1/embeddings requests, run it as a
job at bulk priority (server/batches/runner.py), read its output and error files.

Every file and job belongs to the caller that made it (its API key's or JWT's identity): another caller gets a
404, as for an id that does not exist. With auth off, callers are not told apart and all share one namespace.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path as FilePath
from typing import Literal

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import FileResponse, Response

from embedserve.server.api.batches_schemas import (
    Batch,
    BatchCreateRequest,
    BatchList,
    FileDeleted,
    FileList,
    FileObject,
)
from embedserve.server.api.openai_schemas import OpenAIError
from embedserve.server.batches.multipart import MultipartError, Part, boundary_of, parts
from embedserve.server.batches.runner import Runner, first_repeated_custom_id
from embedserve.server.batches.store import BatchRow, FileRow, Store, Upload
from embedserve.server.http import calls
from embedserve.server.http.errors import ApiError
from embedserve.server.http.responses import json_response

router = APIRouter(prefix="/v1", tags=["OpenAI Batch API"])

FILES_PATH = "/v1/files"
"""The upload route: its body limit is max_file_bytes (and a little for the form around it), not max_body_bytes."""
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_FIELD_BYTES = 1024
MAX_PARTS = 16
WINDOW_SECONDS = {"24h": 24 * 3600}

_ERRORS = {status: {"model": OpenAIError} for status in (400, 404)}

_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "purpose"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "JSONL: one request a line."},
                    "purpose": {"type": "string", "enum": ["batch"]},
                },
            }
        }
    },
}


def store_of(request: Request) -> Store:
    return request.app.state.batch_store


def runner_of(request: Request) -> Runner:
    return request.app.state.batch_runner


def owner() -> str:
    """Whose files and jobs a request sees: its caller's identity, or "" (everyone's) when auth is off."""
    caller = calls.current().caller
    return "" if caller is None or caller.startswith("ip:") else caller


def file_object(row: FileRow) -> dict:
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": row.created_at,
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def batch_object(row: BatchRow) -> dict:
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "errors": json.loads(row.errors) if row.errors else None,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": row.created_at,
        "in_progress_at": row.in_progress_at,
        "expires_at": row.expires_at,
        "finalizing_at": row.finalizing_at,
        "completed_at": row.completed_at,
        "failed_at": row.failed_at,
        "expired_at": row.expired_at,
        "cancelling_at": row.cancelling_at,
        "cancelled_at": row.cancelled_at,
        "request_counts": {"total": row.total, "completed": row.completed, "failed": row.failed},
        "usage": {
            "input_tokens": row.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": row.input_tokens,
        },
        "metadata": json.loads(row.metadata) if row.metadata else None,
    }


def page(data: list[dict], more: bool) -> dict:
    """A page of a list, as OpenAI's cursor pagination has it (the client asks for `after=last_id` next)."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


def _file(request: Request, file_id: str) -> FileRow:
    row = store_of(request).file(file_id, owner())
    if row is None:
        raise ApiError(404, f"there is no file {file_id!r}", param="file_id", code="file_not_found")
    return row


def _batch(request: Request, batch_id: str) -> BatchRow:
    row = store_of(request).batch(batch_id, owner())
    if row is None:
        raise ApiError(404, f"there is no batch {batch_id!r}", param="batch_id", code="batch_not_found")
    return row


# -- files ---------------------------------------------------------------------------------


@router.post(
    "/files",
    response_model=FileObject,
    responses={**_ERRORS, 413: {"model": OpenAIError}},
    openapi_extra={"requestBody": _UPLOAD_BODY},
)
async def create_file(request: Request) -> Response:
    """Uploads a file (multipart/form-data: `file`, and `purpose` `batch`), streamed to disk as it arrives, at most
    max_file_bytes."""
    try:
        boundary = boundary_of(request.headers.get("content-type"))
    except MultipartError as exc:
        raise ApiError(400, str(exc)) from None
    limit = request.app.state.settings.max_file_bytes
    upload: Upload | None = None
    fields: dict[str, bytes] = {}
    current: Part | None = None
    count = 0
    try:
        async for item in parts(request.stream(), boundary):
            if isinstance(item, Part):
                current, count = item, count + 1
                if count > MAX_PARTS:
                    raise ApiError(400, f"the form has more than {MAX_PARTS} parts")
                if item.name == "file":
                    if upload is not None:
                        raise ApiError(400, "send one file a request", param="file")
                    upload = store_of(request).upload(owner(), "batch", item.filename or "upload.jsonl")
                else:
                    fields[item.name] = b""
            elif current is not None and current.name == "file" and upload is not None:
                if upload.bytes + len(item.data) > limit:
                    raise ApiError(413, f"the file is larger than the limit of {limit} bytes", param="file")
                upload.write(item.data)
            elif current is not None:
                fields[current.name] += item.data
                if len(fields[current.name]) > MAX_FIELD_BYTES:
                    raise ApiError(400, f"the form field {current.name!r} is too long", param=current.name)
        purpose = fields.get("purpose", b"").decode("utf-8", "replace")
        if purpose != "batch":
            raise ApiError(400, "'purpose' must be batch (the only purpose this server serves)", param="purpose")
        if upload is None:
            raise ApiError(400, "'file' is required", param="file")
        await asyncio.to_thread(upload.seal)
    except MultipartError as exc:
        if upload is not None:
            upload.discard()
        raise ApiError(400, str(exc)) from None
    except BaseException:
        if upload is not None:
            upload.discard()
        raise
    row = store_of(request).add_file(
        upload.owner, upload.purpose, upload.filename, upload.path, upload.id, lines=upload.lines
    )
    return json_response(file_object(row))


@router.get("/files", response_model=FileList, responses={400: {"model": OpenAIError}})
async def list_files(
    request: Request,
    purpose: Literal["batch", "batch_output"] | None = Query(None, description="Only files of this purpose."),
    after: str | None = Query(None, description="A file id: the page starts after it."),
    limit: int = Query(10_000, ge=1, le=10_000, description="Files a page, 1 to 10000."),
    order: Literal["asc", "desc"] = Query("desc", description="By upload time."),
) -> Response:
    """The caller's files (uploads, and jobs' output and error files)."""
    rows, more = store_of(request).files(
        owner(), purpose=purpose, after=after, limit=limit, newest_first=order == "desc"
    )
    return json_response(page([file_object(row) for row in rows], more))


@router.get("/files/{file_id}", response_model=FileObject, responses=_ERRORS)
async def retrieve_file(request: Request, file_id: str = Path(description="A file's id.")) -> Response:
    return json_response(file_object(_file(request, file_id)))


@router.get(
    "/files/{file_id}/content",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        **_ERRORS,
    },
)
async def file_content(request: Request, file_id: str = Path(description="A file's id.")) -> Response:
    """A file's bytes: an uploaded input, or a job's output or error file (JSONL)."""
    row = _file(request, file_id)
    if not FilePath(row.path).is_file():
        raise ApiError(404, f"there is no file {file_id!r}", param="file_id", code="file_not_found")
    return FileResponse(row.path, media_type="application/octet-stream", filename=row.filename)


@router.delete("/files/{file_id}", response_model=FileDeleted, responses={**_ERRORS, 409: {"model": OpenAIError}})
async def delete_file(request: Request, file_id: str = Path(description="A file's id.")) -> Response:
    """Deletes a file, unless a job not yet finished reads it (409: cancel the job first)."""
    row = _file(request, file_id)
    if (reader := store_of(request).active_batch_reading(row.id)) is not None:
        raise ApiError(409, f"the file is the input of batch {reader!r}, which has not finished; cancel it first")
    store_of(request).delete_file(row)
    return json_response({"id": row.id, "object": "file", "deleted": True})


# -- batches -------------------------------------------------------------------------------


@router.post("/batches", response_model=Batch, responses=_ERRORS)
async def create_batch(body: BatchCreateRequest, request: Request) -> Response:
    """A job that runs every line of the input file through `endpoint`, at bulk priority."""
    store = store_of(request)
    source = store.file(body.input_file_id, owner())
    if source is None:
        raise ApiError(404, f"there is no file {body.input_file_id!r}", param="input_file_id", code="file_not_found")
    if source.purpose != "batch":
        raise ApiError(400, "the input file's purpose must be batch", param="input_file_id")
    most = request.app.state.settings.max_batch_lines
    failure = None
    if source.lines > most:
        message = f"the input file has {source.lines} requests; a batch takes at most {most}"
        failure = {"code": "too_many_requests", "message": message, "param": "input_file_id", "line": None}
    elif source.lines == 0:
        failure = {
            "code": "empty_file",
            "message": "the input file has no requests",
            "param": "input_file_id",
            "line": None,
        }
    elif (twice := await asyncio.to_thread(first_repeated_custom_id, FilePath(source.path))) is not None:
        line, custom_id, first = twice
        failure = {
            "code": "duplicate_custom_id",
            "message": f"line {line} repeats the custom_id {custom_id!r} of line {first}: each request needs its own, "
            "or its output line could not be told apart",
            "param": "custom_id",
            "line": line,
        }
    row = store.create_batch(
        owner(),
        source,
        body.endpoint,
        body.completion_window,
        body.metadata,
        window_seconds=WINDOW_SECONDS[body.completion_window],
        failure=failure,
    )
    runner_of(request).wake()
    return json_response(batch_object(row))


@router.get("/batches", response_model=BatchList, responses={400: {"model": OpenAIError}})
async def list_batches(
    request: Request,
    after: str | None = Query(None, description="A batch id: the page starts after it."),
    limit: int = Query(20, ge=1, le=100, description="Batches a page, 1 to 100."),
) -> Response:
    """The caller's batches, newest first."""
    rows, more = store_of(request).batches(owner(), after=after, limit=limit)
    return json_response(page([batch_object(row) for row in rows], more))


@router.get("/batches/{batch_id}", response_model=Batch, responses=_ERRORS)
async def retrieve_batch(request: Request, batch_id: str = Path(description="A batch's id.")) -> Response:
    return json_response(batch_object(_batch(request, batch_id)))


@router.post("/batches/{batch_id}/cancel", response_model=Batch, responses={**_ERRORS, 409: {"model": OpenAIError}})
async def cancel_batch(request: Request, batch_id: str = Path(description="A batch's id.")) -> Response:
    """Stops a job between lines: cancelling, then cancelled once its lines in flight finish; what it wrote is
    kept in its output and error files. 409 for a job that already ended."""
    row = _batch(request, batch_id)
    if row.status in ("completed", "failed", "expired", "finalizing"):
        raise ApiError(409, f"the batch is {row.status}: it cannot be cancelled", code="batch_ended")
    store_of(request).request_cancel(row.id)
    runner_of(request).wake()
    return json_response(batch_object(_batch(request, batch_id)))
