"""Refusing at the door: when the models a route could use are all saturated, a request is refused
before its body is read, parsed or tokenized.

Under a retry storm most requests are refusals, and on a small machine every bit of event-loop time
they take is taken from the model's threads (a descheduled OpenMP thread stalls each parallel region
of a batch). So the check is made twice as early as it can be:

- in the HTTP protocol (`server/http/protocol.py`), as soon as a request's head is parsed: a refusal is a
  prepared response written straight to the socket, with no ASGI task, middleware or JSON work, and the
  body, when it comes, is skipped. These refusals precede authentication, and are counted in
  `embed_rejections_total{reason="overload"}` but not in the per-route request metrics or access log;
- in `AdmissionMiddleware`, for the same app served by another ASGI server (Ray Serve, tests).

A request that passes may still be refused after tokenizing, by the batcher, which then knows the
model and the request's size: this is the cheap first cut, not the only one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from embedserve.batching.batcher import Priority
from embedserve.server.api.inference import Inference
from embedserve.server.http import calls
from embedserve.server.http.errors import ApiError, send_error
from embedserve.server.serving.model_host import ModelHost
from embedserve.server.telemetry.metrics import Metrics

Headers = Iterable[tuple[bytes, bytes]]

DOOR_PASSED = "embedserve.door_passed"
"""Set in a request's scope by our HTTP protocol once its Door let the request in."""


class Door:
    """Decides whether a request is refused for overload, from its method, path and headers alone."""

    def __init__(
        self,
        host: ModelHost,
        *,
        routes: Mapping[str, Inference],
        remote_kinds: Callable[[], set[str]],
        deadline: Callable[[Headers], float | None],
        metrics: Metrics,
    ) -> None:
        self.host = host
        self.routes = routes
        """The POST routes that queue model work, as they declare themselves (server/api/inference.py)."""
        self.remote_kinds = remote_kinds
        self.deadline = deadline
        self.metrics = metrics

    def refusal(self, method: str, path: str, headers: Headers) -> ApiError | None:
        route = self.routes.get(path) if method == "POST" else None
        # Upstream models do not queue here: while one could take the request, it is not refused here.
        if route is None or route.kinds & self.remote_kinds():
            return None
        retry = self.host.saturated(route.kinds, route.batcher, self.deadline(headers), door_priority(headers))
        if retry is None:
            return None
        self.metrics.rejections.labels("", "overload").inc()
        return ApiError(
            429,
            f"the server is at capacity; retry after {retry:.0f} s",
            code="overloaded",
            headers={"Retry-After": str(max(1, round(retry)))},
        )


class AdmissionMiddleware:
    """The door for ASGI servers other than ours (pure ASGI, inside authentication and rate limits)."""

    def __init__(self, app: ASGIApp, *, door: Door) -> None:
        self.app = app
        self.door = door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get(DOOR_PASSED):
            error = self.door.refusal(scope["method"], scope["path"], scope["headers"])
            if error is not None:
                await send_error(send, scope["path"], error)
                return
        await self.app(scope, receive, send)


def door_priority(headers: Headers) -> Priority:
    """The priority class a request asks for, read off its headers before its body (a bad value is its route's
    400: the door judges it as interactive)."""
    try:
        return calls.priority(headers)
    except ApiError:
        return "interactive"
