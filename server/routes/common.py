"""What the embedding routes share: finding the model, limits, running the request."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request

from server.disconnect import unless_disconnected
from server.errors import ApiError
from server.model_host import Embeddings, ModelHost, ServedModel


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
        served, inputs, truncate=truncate, normalize=normalize, dimensions=dimensions, prompt_name=prompt_name
    )
    return await unless_disconnected(request, work)
