"""One line of a batch job's input file, run through the very route that serves it over HTTP.

A line's body goes to the route's own endpoint function (`server/api/openai.create_embeddings`), with a request
made here: its headers ask for bulk priority (so a job only fills the capacity that queries leave) and the
longest deadline the server allows, and it names the job's owner as the caller. Its answer, or its error in
OpenAI's shape, is what the output or error file holds: the same bytes a direct call would have got.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from embedserve.server.http import calls
from embedserve.server.http.errors import ApiError, as_api_error, rendered, validation_error
from embedserve.server.http.middleware import new_request_id
from embedserve.server.telemetry.logs import request_id

Endpoint = Callable[[Any, Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    """What a job's `endpoint` runs: the route's path, its body schema, and its endpoint function."""

    path: str
    schema: type[BaseModel]
    endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class Answer:
    """A line's HTTP answer: its status, its JSON body (parsed, and as the route wrote it), and its request id."""

    status: int
    body: Any
    content: bytes
    request_id: str

    @property
    def error(self) -> ApiError | None:
        """The error, for answers that a retry may turn into a success (429, 503, 504)."""
        if self.status < 400:
            return None
        detail = self.body.get("error", {}) if isinstance(self.body, dict) else {}
        return ApiError(self.status, str(detail.get("message", "")), code=detail.get("code"))


async def _never(_: None = None) -> Message:
    """A request's receive whose client never leaves: a job is not cancelled by a disconnect."""
    await asyncio.Future()
    raise AssertionError("unreachable")


def _request(app: FastAPI, path: str) -> Request:
    timeout = str(app.state.settings.max_request_timeout).encode()
    scope = {
        "type": "http",
        "app": app,
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "http_version": "1.1",
        "query_string": b"",
        "headers": [(calls.PRIORITY_HEADER, b"bulk"), (calls.DEADLINE_HEADER, timeout)],
        "client": None,
        "server": None,
    }
    return Request(scope, _never)


async def answer(
    app: FastAPI, route: Route, body: Any, caller: str, admit: Callable[[int], Awaitable[None]] | None = None
) -> Answer:
    """Runs one line's body through `route` as `caller`, at bulk priority, under the caller's token limits (`admit`,
    as the guard gives a request's call; in a task of its own: the request's call and id are this line's)."""
    rid = new_request_id()
    request_id.set(rid)
    call, _ = calls.begin()
    call.caller = caller
    call.admit = admit
    try:
        try:
            parsed = route.schema.model_validate(body)
        except ValidationError as exc:
            errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
            raise validation_error(route.path, RequestValidationError(errors)) from None
        response = await route.endpoint(parsed, _request(app, route.path))
        return Answer(response.status_code, orjson.loads(response.body), bytes(response.body), rid)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # every error is an answer in the route's shape, as the HTTP handlers give it
        error = as_api_error(exc)
        content, _ = rendered(route.path, error)
        return Answer(error.status, orjson.loads(content), content, rid)
