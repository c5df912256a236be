"""One pure-ASGI middleware for what every request needs: request id, body limit, metrics, access log.

Pure ASGI (not BaseHTTPMiddleware) because it runs on every request and must stay cheap.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException

from server.errors import error_body
from server.logs import request_id
from server.metrics import Metrics

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

access = logging.getLogger("embedserve.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, access_log: bool, routes: set[str]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.routes = routes

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
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
        rid = rid or uuid.uuid4().hex
        token = request_id.set(rid)
        rid_header = (b"x-request-id", rid.encode())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        limit = self.max_body_bytes
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"the request body is larger than the limit of {limit} bytes")
            return message

        try:
            if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
                await self._reject_too_large(path, send_with_id)
            else:
                await self.app(scope, limited_receive, send_with_id)
        finally:
            self._record(scope, path, status, time.perf_counter() - started)
            request_id.reset(token)

    async def _reject_too_large(self, path: str, send: Callable[[Message], Awaitable[None]]) -> None:
        body = error_body(path, 413, f"the request body is larger than the limit of {self.max_body_bytes} bytes")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _record(self, scope: Scope, path: str, status: int, seconds: float) -> None:
        route = path if path in self.routes else "other"
        model = scope.get("state", {}).get("model", "")
        m = self.metrics
        m.requests.labels(model, route, str(status)).inc()
        m.duration.labels(model, route).observe(seconds)
        if status >= 400:
            m.errors.labels(model, route, str(status)).inc()
        if self.access_log:
            access.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    "model": model or None,
                    "caller": scope.get("state", {}).get("caller"),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )
