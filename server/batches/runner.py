"""The job loop: runs batch jobs one at a time, oldest first, each with a bounded number of its lines in flight at
bulk priority, so the batcher forms full batches from them without ever delaying a query.

Lines finish in any order but are written in input order: a finished line waits until every line before it is
written, then each contiguous group goes to the output and error files, is fsynced, and only then is recorded as
done (server/batches/store.py has the invariant this keeps). Output is therefore in input order, and a restart
resumes exactly after the last recorded line.

Jobs stop between lines: a cancelled job lets its lines in flight finish and keeps what it wrote (as OpenAI
does); shutdown drops its lines in flight (they were never recorded, so a restart runs them again).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from fastapi import FastAPI

from embedserve.server.batches.lines import Answer, Route, answer
from embedserve.server.batches.store import BatchRow, Progress, Store, new_id
from embedserve.server.telemetry.metrics import Metrics

log = logging.getLogger("embedserve.batches")

RETRIES = 3
"""Attempts a line gets after a 503 (once models are loaded) or a 504, before its error is its answer."""
EXPIRED = "This request could not be executed before the completion window expired."
"""OpenAI's message for each line a job did not reach in its window (code batch_expired)."""
EXPIRE_GROUP = 1000
"""Lines an expired job files as batch_expired per recorded group."""
IDLE_POLL_SECONDS = 1.0
"""How often an idle runner looks for jobs that nothing woke it for (another process's, say)."""


class Stopped(Exception):
    """The server is shutting down: the job stays where its recorded progress says."""


@dataclass(frozen=True, slots=True)
class Finished:
    """A line's outcome: one line for the output file or the error file."""

    output: bytes | None
    error: bytes | None
    tokens: int = 0


def output_line(custom_id: Any, result: Answer) -> bytes:
    """OpenAI's batch output line: the route's answer (its bytes as the route wrote them) in `response.body`."""
    line = {
        "id": new_id("batch_req_"),
        "custom_id": custom_id,
        "response": {
            "status_code": result.status,
            "request_id": result.request_id,
            "body": orjson.Fragment(result.content),
        },
        "error": None,
    }
    return orjson.dumps(line) + b"\n"


def error_line(custom_id: Any, code: str, message: str) -> bytes:
    """A line that never reached the route (not JSON, another URL...): OpenAI's shape, `response` null."""
    line = {
        "id": new_id("batch_req_"),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }
    return orjson.dumps(line) + b"\n"


def parse_line(raw: bytes, endpoint: str, max_bytes: int) -> tuple[Any, Any] | Finished:
    """A line's custom_id and body, or its error line. A line is held to the body limit of a direct request."""
    if len(raw) > max_bytes:
        message = f"the line has {len(raw)} bytes; a request's body may have at most {max_bytes}"
        return Finished(None, error_line(None, "request_too_large", message))
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Finished(None, error_line(None, "invalid_json_line", f"the line is not valid JSON: {exc}"))
    if not isinstance(request, dict):
        return Finished(None, error_line(None, "invalid_json_line", "the line must be a JSON object"))
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return Finished(None, error_line(None, "missing_required_parameter", "the line has no custom_id string"))
    if request.get("method") != "POST":
        return Finished(None, error_line(custom_id, "invalid_method", "the line's method must be POST"))
    if request.get("url") != endpoint:
        message = f"the line's url is {request.get('url')!r}; this batch's endpoint is {endpoint!r}"
        return Finished(None, error_line(custom_id, "invalid_url", message))
    body = request.get("body")
    if not isinstance(body, dict):
        return Finished(None, error_line(custom_id, "missing_required_parameter", "the line's body must be an object"))
    return custom_id, body


def first_repeated_custom_id(path: Path) -> tuple[int, Any, int] | None:
    """The first line (1-based) whose custom_id an earlier line used, that id, and the earlier line; None when every
    id is unique. Lines that are not JSON objects with a custom_id are skipped: the runner files them as errors."""
    seen: dict[str, int] = {}
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                custom_id = orjson.loads(raw).get("custom_id") if raw.strip() else None
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if custom_id is None:
                continue
            key = orjson.dumps(custom_id).decode()
            if key in seen:
                return number, custom_id, seen[key]
            seen[key] = number
    return None


def _append(output: IO[bytes], errors: IO[bytes], group: list[Finished]) -> tuple[int, int]:
    """Appends a group's lines and fsyncs both files; their new lengths."""
    output.write(b"".join(done.output for done in group if done.output))
    errors.write(b"".join(done.error for done in group if done.error))
    for handle in (output, errors):
        handle.flush()
        os.fsync(handle.fileno())
    return output.tell(), errors.tell()


class Runner:
    def __init__(
        self,
        store: Store,
        app: FastAPI,
        routes: Mapping[str, Route],
        metrics: Metrics,
        *,
        concurrency: int,
        max_line_bytes: int,
        loading: Callable[[], bool],
        draining: Callable[[], bool],
        admission: Callable[[str], Callable[[int], Awaitable[None]]] | None = None,
    ) -> None:
        self.store = store
        self.app = app
        self.routes = routes
        self.metrics = metrics
        self.concurrency = concurrency
        self.max_line_bytes = max_line_bytes
        self.loading = loading
        """Whether models are still loading: a job waits for them, rather than failing its lines."""
        self.draining = draining
        self.admission = admission
        """The token limits a job owner's lines run under (server.http.guard.TokenAdmission), as their requests would;
        None: none."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Runs the jobs a previous process left unfinished, then whatever comes."""
        self._task = asyncio.create_task(self._run_forever(), name="batch-runner")

    def wake(self) -> None:
        """A job was created or cancelled: look now."""
        self._wake.set()

    async def close(self) -> None:
        """Stops between lines: lines in flight are dropped, unrecorded, for the next start to run again."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run_forever(self) -> None:
        while True:
            self._wake.clear()
            job = self.store.next_active() if self.store.exists else None
            if job is None:
                try:
                    async with asyncio.timeout(IDLE_POLL_SECONDS):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            try:
                await self._run(job)
            except Stopped:
                return
            except Exception as exc:  # a bug or a lost file: this job fails, the next ones still run
                log.exception("batch job failed", extra={"batch": job.id})
                failure = {
                    "code": "internal_error",
                    "message": f"{type(exc).__name__}: {exc}",
                    "param": None,
                    "line": None,
                }
                try:
                    self.store.set_status(
                        job.id, "failed", errors=orjson.dumps({"object": "list", "data": [failure]}).decode()
                    )
                except Exception:  # the database itself fails (a full disk): try again later, not in a hot loop
                    log.exception("batch job could not be marked failed", extra={"batch": job.id})
                    await asyncio.sleep(IDLE_POLL_SECONDS)

    async def _run(self, job: BatchRow) -> None:
        if job.status == "validating":
            self.store.set_status(job.id, "in_progress")
        elif job.status == "cancelling":
            return await self._finish(job, "cancelled")
        elif job.status == "finalizing":
            return await self._finish(job, "completed")
        while self.loading():  # a restart's jobs wait for the models they need
            await asyncio.sleep(0.2)
        current = self.store.batch(job.id)
        assert current is not None
        ending = await self._lines(current)
        latest = self.store.batch(job.id)
        assert latest is not None
        if ending == "completed":
            self.store.set_status(job.id, "finalizing")
        await self._finish(latest, ending)

    async def _finish(self, job: BatchRow, status: str) -> None:
        """Registers the output and error files written so far (cut to what was recorded: a kill may have come
        between a write and its record), and moves the job to its end state."""
        await asyncio.to_thread(self.store.resume_files, job)
        output_id, error_id = self.store.finish_files(job)
        self.store.set_status(job.id, status, output_file_id=output_id, error_file_id=error_id)
        log.info("batch job ended", extra={"batch": job.id, "status": status})

    async def _lines(self, job: BatchRow) -> str:
        """Runs the job's remaining lines; how it ended: completed, cancelled or expired."""
        input_file = self.store.file(job.input_file_id, job.owner)
        if input_file is None:
            raise FileNotFoundError(f"the input file {job.input_file_id} was deleted")
        output_path, error_path = await asyncio.to_thread(self.store.resume_files, job)
        index = job.next_line
        written = job.next_line
        offset = job.input_offset
        ends: dict[int, int] = {}
        in_flight: dict[asyncio.Task[Finished], int] = {}
        ready: dict[int, Finished] = {}
        ending = "completed"
        exhausted = False
        with open(input_file.path, "rb") as source, open(output_path, "ab") as output, open(error_path, "ab") as errors:
            source.seek(offset)
            try:
                while True:
                    if self.draining():
                        raise Stopped()
                    status = self.store.batch(job.id)
                    if ending == "completed" and status is not None and status.status == "cancelling":
                        ending = "cancelled"
                    if ending == "completed" and status is not None and time.time() >= status.expires_at:
                        ending = "expired"
                    while ending == "completed" and not exhausted and len(in_flight) < self.concurrency:
                        raw = source.readline()
                        offset += len(raw)
                        if not raw:
                            exhausted = True
                        elif raw.strip():
                            task = asyncio.create_task(self._line(job, raw))
                            in_flight[task] = index
                            ends[index] = offset
                            index += 1
                    if not in_flight:
                        if ending == "expired" and not exhausted:
                            await self._expire_rest(job, source, output, errors, written, offset)
                        return ending
                    done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        ready[in_flight.pop(task)] = task.result()  # Stopped: the server is draining
                    group = []
                    while written in ready:
                        group.append(ready.pop(written))
                        written += 1
                    if group:
                        await self._record(job, output, errors, group, written, ends[written - 1])
            finally:
                for task in in_flight:
                    task.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _expire_rest(
        self, job: BatchRow, source: IO[bytes], output: IO[bytes], errors: IO[bytes], next_line: int, offset: int
    ) -> None:
        """The lines an expired job did not reach, each a batch_expired line of the error file (as OpenAI files
        them), recorded group by group like any other lines: a kill meanwhile resumes the filing."""
        group: list[Finished] = []
        for raw in iter(source.readline, b""):
            offset += len(raw)
            if not raw.strip():
                continue
            parsed = parse_line(raw, job.endpoint, self.max_line_bytes)  # a bad line keeps its own error
            group.append(
                parsed
                if isinstance(parsed, Finished)
                else Finished(None, error_line(parsed[0], "batch_expired", EXPIRED))
            )
            next_line += 1
            if len(group) == EXPIRE_GROUP:
                await self._record(job, output, errors, group, next_line, offset)
                group = []
        if group:
            await self._record(job, output, errors, group, next_line, offset)

    async def _record(
        self, job: BatchRow, output: IO[bytes], errors: IO[bytes], group: list[Finished], next_line: int, offset: int
    ) -> None:
        """Writes a group, then records it: never one without the other, even when cancelled half-way."""

        async def write_then_commit() -> None:
            output_bytes, error_bytes = await asyncio.to_thread(_append, output, errors, group)
            completed = sum(1 for done in group if done.output)
            failed = len(group) - completed
            tokens = sum(done.tokens for done in group)
            self.store.advance(
                job.id, Progress(next_line, offset, output_bytes, error_bytes, completed, failed, tokens)
            )
            lines = self.metrics.batch_lines
            lines.labels("completed").inc(completed)
            lines.labels("failed").inc(failed)

        step = asyncio.ensure_future(write_then_commit())
        try:
            await asyncio.shield(step)
        except asyncio.CancelledError:
            await step
            raise

    async def _line(self, job: BatchRow, raw: bytes) -> Finished:
        parsed = parse_line(raw, job.endpoint, self.max_line_bytes)
        if isinstance(parsed, Finished):
            return parsed
        custom_id, body = parsed
        result = await self._answer(self.routes[job.endpoint], body, job.owner)
        if result.status == 200:
            usage = result.body.get("usage") if isinstance(result.body, dict) else None
            tokens = usage.get("prompt_tokens", 0) if isinstance(usage, dict) else 0
            return Finished(output_line(custom_id, result), None, tokens)
        if result.status >= 500:
            log.warning("batch line failed", extra={"batch": job.id, "status": result.status, "body": result.body})
        return Finished(None, output_line(custom_id, result))

    async def _answer(self, route: Route, body: Any, caller: str) -> Answer:
        """The route's answer, retried while it is one that time mends: 429 (the queue is full) always, a 503 while
        models load, and a few times more after that or a 504. A 503 of a draining server stops the job."""
        attempt = 0
        while True:
            admit = self.admission(caller) if self.admission is not None else None
            result = await answer(self.app, route, body, caller, admit)
            error = result.error
            if error is None:
                return result
            if error.code == "shutting_down" or self.draining():
                raise Stopped()
            if error.status == 429 or (error.status == 503 and self.loading()):
                await asyncio.sleep(1.0)
                continue
            if error.status not in (503, 504) or attempt >= RETRIES:
                return result
            attempt += 1
            await asyncio.sleep(min(0.5 * 2**attempt, 10.0))
