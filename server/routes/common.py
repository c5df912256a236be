"""What the embedding routes share: finding the model, limits, running the request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from starlette.requests import Request

from server.disconnect import unless_disconnected
from server.errors import ApiError
from server.model_host import Admission, Embeddings, ModelHost, ServedModel

T = TypeVar("T")


def host_of(request: Request) -> ModelHost:
    return request.app.state.host


def served_model(request: Request, name: str | None, kind: str = "embed") -> ServedModel:
    served = host_of(request).get(name, kind)
    request.state.model = served.spec.id  # labels this request's metrics and access log
    return served


def check_request(request: Request, served: ServedModel, count: int, dimensions: int | None) -> None:
    limit = request.app.state.settings.max_inputs
    if count > limit:
        raise ApiError(413, f"too many inputs: {count}; the limit is {limit} per request", param="input")
    if dimensions is not None and dimensions > served.info.dimension:
        raise ApiError(
            400,
            f"dimensions {dimensions} is larger than model {served.spec.id!r}'s size of {served.info.dimension}",
            param="dimensions",
        )


async def embed(
    request: Request,
    served: ServedModel,
    inputs: Sequence[str] | Sequence[Sequence[int]],
    *,
    truncate: bool,
    normalize: bool | None = None,
    dimensions: int | None = None,
    prompt_name: str | None = None,
) -> Embeddings:
    check_request(request, served, len(inputs), dimensions)
    work = host_of(request).embed(
        served,
        inputs,
        truncate=truncate,
        normalize=normalize,
        dimensions=dimensions,
        prompt_name=prompt_name,
        admit=admission(request),
    )
    return await run_within_deadline(request, work)


def admission(request: Request) -> Admission | None:
    """The caller's token admission check that the guard middleware left for the route."""
    return getattr(request.state, "admit_tokens", None)


def deadline_seconds(request: Request) -> float:
    """The request's deadline: `X-Request-Timeout` (seconds), capped, or the server's default."""
    settings = request.app.state.settings
    asked = request.headers.get("x-request-timeout")
    if asked is None:
        return settings.request_timeout
    try:
        seconds = float(asked)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise ApiError(400, "X-Request-Timeout must be a positive number of seconds", param="X-Request-Timeout")
    return min(seconds, settings.max_request_timeout)


async def run_within_deadline(request: Request, work: Awaitable[T]) -> T:
    """Runs the work until it ends, the client leaves, or the deadline passes (504; its queued items
    are dropped, as for a client that left)."""
    seconds = deadline_seconds(request)
    try:
        async with asyncio.timeout(seconds):
            return await unless_disconnected(request, work)
    except TimeoutError:
        model = getattr(request.state, "model", "")
        host_of(request).metrics.rejections.labels(model, "deadline").inc()
        raise ApiError(
            504, f"the request did not finish within its deadline of {seconds:g} s", code="deadline_exceeded"
        ) from None
