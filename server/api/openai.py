"""OpenAI-compatible routes: POST /v1/embeddings, GET /v1/models, GET /v1/models/{id}."""

from __future__ import annotations

import time

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from embedserve.models.backend import SPARSE
from embedserve.models.output_types import encode
from embedserve.models.spec import ModelSpec
from embedserve.server.api.common import (
    call_model,
    check_count,
    embed,
    encoded,
    gateway_of,
    host_of,
    target_model,
)
from embedserve.server.api.inference import inference
from embedserve.server.api.openai_schemas import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    ModelCard,
    ModelList,
    OpenAIError,
)
from embedserve.server.http.errors import ApiError
from embedserve.server.http.responses import json_response
from embedserve.server.serving.model_host import ModelHost
from embedserve.server.serving.seam import EmbedParams
from embedserve.server.serving.upstream.client import UpstreamModel

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

_ERRORS = {status: {"model": OpenAIError} for status in (400, 404, 413, 429, 500, 502, 503, 504)}
_STARTED = int(time.time())


@router.post("/embeddings", response_model=EmbeddingsResponse, responses=_ERRORS)
@inference("embed")
async def create_embeddings(body: EmbeddingsRequest, request: Request) -> Response:
    """Embeddings in OpenAI's shape; `encoding_format: base64` gives little-endian float32 bytes.
    A model served upstream answers in the same shape. With Jina's `late_chunking`, the inputs are one
    document's chunks (a model served here)."""
    served = await target_model(request, body.model, "embed")
    options = EmbedParams(truncate=body.truncate, dimensions=body.dimensions, prompt_name=body.prompt_name)
    inputs = body.inputs()
    if body.late_chunking:
        if not isinstance(inputs[0], str):
            raise ApiError(400, "late_chunking takes text chunks, not token ids", param="input")
        check_count(request, len(inputs))
        chunks: list[str] = inputs  # type: ignore[assignment]
        result = await call_model(request, lambda call: served.embed_late_chunks(chunks, options, call))
    else:
        result = await embed(request, served, inputs, options)
    if body.embedding_type is not None:
        if body.encoding_format != "float":
            raise ApiError(400, "send embedding_type or encoding_format base64, not both", param="embedding_type")
        rows = await encoded(served, result.vectors, body.embedding_type, dimensions=body.dimensions)
    else:
        rows = encode(result.vectors, body.encoding_format)
    data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": served.spec.id,
            "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
        }
    )


def _local_card(host: ModelHost, spec: ModelSpec) -> dict:
    info = host.info(spec.id)
    return {
        "id": spec.id,
        "object": "model",
        "created": _STARTED,
        "owned_by": "embedserve",
        "kind": spec.kind,
        "aliases": list(spec.aliases),
        "status": host.status[spec.id],
        "dimension": info.width if info else None,
        "max_length": info.max_length if info else spec.max_length,
        "backend": info.backend if info else spec.backend,
        "device": info.device if info else None,
        "dtype": info.dtype if info else None,
        "sparse": SPARSE in host.outputs(spec.id),
        "prompts": sorted(info.prompts) if info else [],
        "default_prompt": info.default_prompt if info else None,
        "error": host.errors.get(spec.id),
        "location": "local",
    }


def _upstream_card(upstream: UpstreamModel) -> dict:
    spec = upstream.spec
    return {
        "id": spec.id,
        "object": "model",
        "created": _STARTED,
        "owned_by": "upstream",
        "kind": "upstream",
        "serves": list(spec.serves),
        "aliases": list(spec.aliases),
        "status": "ready" if upstream.available else "unavailable",
        "location": "upstream",
        "protocol": spec.protocol,
        "upstream_model": spec.remote_name,
        "endpoints": [e.url for e in upstream.balancer.endpoints],
    }


@router.get("/models", response_model=ModelList)
async def list_models(request: Request) -> Response:
    host = host_of(request)
    cards = [_local_card(host, spec) for spec in host.registry.specs]
    cards += [_upstream_card(upstream) for upstream in gateway_of(request).models.values()]
    return json_response({"object": "list", "data": cards})


@router.get("/models/{model_id:path}", response_model=ModelCard, responses={404: {"model": OpenAIError}})
async def retrieve_model(request: Request, model_id: str = Path(description="A model id or alias.")) -> Response:
    """One model's card, by id or alias (OpenAI's `client.models.retrieve`)."""
    host = host_of(request)
    if (spec := host.registry.find(model_id)) is not None:
        return json_response(_local_card(host, spec))
    if (upstream := gateway_of(request).named(model_id)) is not None:
        return json_response(_upstream_card(upstream))
    raise ApiError(404, f"model {model_id!r} is not served", param="model", code="model_not_found")
