"""Refusing at the door: when the models a route could use are all saturated, a request is refused
before its body is read, parsed or tokenized (pure ASGI, after authentication and rate limits).

Under a retry storm most requests are refusals; each refusal that parses and tokenizes its body takes
CPU from the batches that are running. This check costs a dictionary lookup and a division per model.
A request that passes it may still be refused after tokenizing (by the batcher, which then knows the
model and the request's size): this is the cheap first cut, not the only one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from server.errors import ApiError, error_response
from server.metrics import Metrics
from server.model_host import ModelHost

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# The routes that queue model work, by the kind of model they run.
INFERENCE_ROUTES = {
    "/v1/embeddings": "embed",
    "/embed": "embed",
    "/batch-embed": "embed",
    "/embed_sparse": "embed",
    "/v1/rerank": "rerank",
    "/rerank": "rerank",
}


class AdmissionMiddleware:
    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        host: ModelHost,
        remote_kinds: Callable[[], set[str]],
        deadline: Callable[[Scope], float | None],
        metrics: Metrics,
    ) -> None:
        self.app = app
        self.host = host
        self.remote_kinds = remote_kinds
        self.deadline = deadline
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = INFERENCE_ROUTES.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        # Upstream models do not queue here: while one could take the request, it is not refused here.
        if kind is not None and kind not in self.remote_kinds():
            retry = self.host.saturated(kind, self.deadline(scope))
            if retry is not None:
                self.metrics.rejections.labels("", "overload").inc()
                error = ApiError(
                    429,
                    f"the server is at capacity; retry after {retry:.0f} s",
                    code="overloaded",
                    headers={"Retry-After": str(max(1, round(retry)))},
                )
                response = error_response(scope["path"], error)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
