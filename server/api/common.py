"""What the routes share: finding the model a request names (here or upstream, the same
`ServedModel` either way), limits, and running a call within the request's deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
from starlette.requests import Request

from embedserve.models.errors import UnknownModel
from embedserve.models.output_types import CALIBRATED, OutputType, encode
from embedserve.models.types import Embeddings
from embedserve.server.http import calls
from embedserve.server.http.disconnect import unless_disconnected
from embedserve.server.http.errors import ApiError, is_openai_path
from embedserve.server.serving.local_model import LocalModel
from embedserve.server.serving.model_host import ModelHost
from embedserve.server.serving.seam import Call, EmbedParams, Inputs, ServedModel
from embedserve.server.serving.upstream.gateway import Gateway

T = TypeVar("T")


def host_of(request: Request) -> ModelHost:
    return request.app.state.host


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


MODEL_HEADER = "x-model"
"""Names the model when the body cannot (TEI's clients, huggingface_hub's InferenceClient): a `model` in
the body wins over it."""


def named(request: Request, name: str | None) -> str | None:
    return name if name is not None else request.headers.get(MODEL_HEADER) or None


async def local_model(request: Request, name: str | None, kind: str = "embed") -> LocalModel:
    """A model served here (not an upstream one), held by the request until it ends (so it is not unloaded
    under it), and loaded first where it is not (within the request's deadline)."""
    host = host_of(request)
    spec = host.registry.resolve(named(request, name), kind)
    served = await host.acquire(spec.id, kind, within=deadline_seconds(request))
    call = calls.current()
    call.releases.append(lambda: host.release(spec.id))
    call.model = spec.id
    return served


async def target_model(request: Request, name: str | None, kind: str) -> ServedModel:
    """The model a request names (in its body, or the X-Model header), here or upstream. With no name,
    the only model that can do `kind`."""
    gateway = gateway_of(request)
    name = named(request, name)
    if name is not None:
        upstream = gateway.find(name, kind)
    else:
        remote = gateway.serving(kind)
        upstream = remote[0] if len(remote) == 1 and not host_of(request).registry.ids(kind) else None
    if upstream is not None:
        calls.current().model = upstream.spec.id
        return upstream
    try:
        return await local_model(request, name, kind)
    except UnknownModel as exc:
        served = [*exc.served, *(m.spec.id for m in gateway.serving(kind))]
        raise UnknownModel(name, served, kind, served_as=exc.served_as) from None


async def encoded(
    served: ServedModel, vectors: np.ndarray, kind: OutputType, *, dimensions: int | None = None
) -> np.ndarray | list:
    """Finished vectors in an output type (models/output_types.py); int8/uint8 are scaled by the
    model's calibration ranges."""
    ranges = await served.calibration(dimensions) if kind in CALIBRATED else None
    return encode(vectors, kind, ranges)


def check_count(request: Request, count: int) -> None:
    """At most max_inputs texts a request: past it, OpenAI's routes answer 400 (as OpenAI does, a
    BadRequestError in its clients), the native ones 413."""
    limit = request.app.state.settings.max_inputs
    if count > limit:
        status = 400 if is_openai_path(request.url.path) else 413
        raise ApiError(status, f"too many inputs: {count}; the limit is {limit} per request", param="input")


async def call_model(request: Request, work: Callable[[Call], Awaitable[T]]) -> T:
    """A model call with the request's call (its deadline and token admission), run within that deadline."""
    call = calls.current()
    call.within = deadline_seconds(request)
    call.priority = calls.priority(request.scope["headers"])
    return await run_within_deadline(request, work(call), call.within)


async def embed(request: Request, served: ServedModel, inputs: Inputs, options: EmbedParams) -> Embeddings:
    """The one embedding path of every shape."""
    check_count(request, len(inputs))
    return await call_model(request, lambda call: served.embed(inputs, options, call))


def deadline_in(seconds: float) -> float:
    """The event loop's time `seconds` from now: an upstream call's absolute deadline."""
    return asyncio.get_running_loop().time() + seconds


def deadline_seconds(request: Request) -> float:
    """The request's deadline: `X-Request-Timeout` (seconds), capped, or the server's default."""
    return calls.deadline(request.scope["headers"], request.app.state.settings)


async def run_within_deadline(request: Request, work: Awaitable[T], seconds: float | None = None) -> T:
    """Runs the work until it ends, the client leaves, or the deadline passes (504; its queued items
    are dropped, as for a client that left). When the server's shutdown grace runs out, uvicorn cancels
    the requests still running: while draining, that is a 503 in the route's shape, not a 500."""
    seconds = deadline_seconds(request) if seconds is None else seconds
    try:
        async with asyncio.timeout(seconds):
            return await unless_disconnected(request, work)
    except asyncio.CancelledError:
        if not host_of(request).draining:
            raise
        asyncio.current_task().uncancel()  # type: ignore[union-attr]  # answered, not abandoned
        raise ApiError(
            503,
            "the server is shutting down and its grace period ran out before this request finished; retry",
            code="shutting_down",
            headers={"Retry-After": "1", "Connection": "close"},
        ) from None
    except TimeoutError:
        host_of(request).metrics.rejections.labels(calls.current().model, "deadline").inc()
        raise ApiError(
            504, f"the request did not finish within its deadline of {seconds:g} s", code="deadline_exceeded"
        ) from None
