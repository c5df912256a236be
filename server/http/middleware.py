"""One pure-ASGI middleware for what every request needs: request id, body limit and read timeout, metrics,
access log.

Pure ASGI (not BaseHTTPMiddleware) because it runs on every request and must stay cheap.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve.server.http import calls
from embedserve.server.http.errors import ApiError, send_error
from embedserve.server.serving.seam import Call
from embedserve.server.telemetry import tracing
from embedserve.server.telemetry.logs import AccessLog, request_id
from embedserve.server.telemetry.metrics import Metrics

access = AccessLog(logging.getLogger("embedserve.access"))
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Request ids: a random per-process prefix and a counter, unique without a uuid4 (an urandom call) per request.
_ID_PREFIX = uuid.uuid4().hex[:16]
_ids = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):016x}"


UPLOAD_MIN_BYTES_PER_SECOND = 64 * 1024
"""An upload (a path with a body limit of its own) may take longer than body_read_timeout while it keeps arriving at
this rate: each chunk moves its deadline on by the chunk's bytes at this rate. So a 200 MB file over a link of a few
hundred KB/s is received, and a client that drips bytes is still cut off."""


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        access_log: bool,
        routes: set[str],
        body_read_timeout: float = 30.0,
        access_log_probes: bool = False,
        body_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_limits = dict(body_limits or {})
        """Paths whose bodies have their own limit (file uploads), instead of max_body_bytes."""
        self.body_read_timeout = body_read_timeout
        self.access_log = access_log
        self.access_log_probes = access_log_probes
        self.routes = routes
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        """Each (model, route, status)'s request counter and duration histogram; the keys are bounded: models served,
        routes (other paths count as "other") and statuses."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        rid, declared_length = None, None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _VALID_ID.match(candidate) else None
            elif name == b"content-length":
                declared_length = value
        rid = rid or new_request_id()
        token = request_id.set(rid)
        call, call_token = calls.begin()
        rid_header = (b"x-request-id", rid.encode())
        status = 500
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        upload = path in self.body_limits
        limit = self.body_limits[path] if upload else self.max_body_bytes
        received = 0
        read_timeout = self.body_read_timeout
        # The whole body must arrive within read_timeout of the first read; an upload's, plus its bytes' time at
        # UPLOAD_MIN_BYTES_PER_SECOND.
        body_deadline: float | None = None
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_deadline, body_done
            if body_done:  # only the disconnect is left to wait for, as long as it takes
                return await receive()
            loop = asyncio.get_running_loop()
            if body_deadline is None:
                body_deadline = loop.time() + read_timeout
            try:
                async with asyncio.timeout_at(body_deadline):
                    message = await receive()
            except TimeoutError:
                # A client that stalls mid-body (slow loris) must not hold its connection for ever.
                body_done = True
                if started_response:  # too late for a 408: the app sees the client as gone
                    return {"type": "http.disconnect"}
                pace = f" (uploads: plus 1 s a {UPLOAD_MIN_BYTES_PER_SECOND // 1024} KiB received)" if upload else ""
                raise HTTPException(
                    408,
                    f"the request body was not received within {read_timeout:g} s{pace}",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                received += chunk
                if upload:
                    body_deadline += chunk / UPLOAD_MIN_BYTES_PER_SECOND
                if received > limit:
                    raise HTTPException(413, f"the request body is larger than the limit of {limit} bytes")
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        route = path if path in self.routes else "other"
        with tracing.server_span(scope["method"], route, scope["headers"]) as span:
            try:
                if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
                    await self._reject_too_large(path, limit, send_with_id)
                else:
                    await self.app(scope, limited_receive, send_with_id)
            finally:
                self._record(scope, call, path, status, time.perf_counter() - started)
                request_id.reset(token)
                calls.end(call_token)
                if span is not None:
                    span.set_attribute("http.response.status_code", status)
                    span.set_attribute("embedserve.model", call.model)
                    span.set_attribute("embedserve.request_id", rid)

    async def _reject_too_large(self, path: str, limit: int, send: Send) -> None:
        message = f"the request body is larger than the limit of {limit} bytes"
        await send_error(send, path, ApiError(413, message))

    def _record(self, scope: Scope, call: Call, path: str, status: int, seconds: float) -> None:
        route = path if path in self.routes else "other"
        model = call.model
        m = self.metrics
        key = (model, route, status)
        if (series := self._series.get(key)) is None:  # labels() locks and validates: a few µs a call, each request
            series = self._series[key] = (m.requests.labels(model, route, str(status)), m.duration.labels(model, route))
        requests, duration = series
        requests.inc()
        duration.observe(seconds)
        # A probe's 503 (loading, draining) is the server's state, not an error: it would trip error-rate alerts.
        probe = path.startswith("/health")
        if status >= 400 and not probe:
            m.errors.labels(model, route, str(status)).inc()
        if self.access_log and (not probe or self.access_log_probes):
            access.write(
                {
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    "model": model or None,
                    "caller": call.caller,
                    "client": (scope.get("client") or ("", 0))[0],
                }
            )
