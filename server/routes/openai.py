"""OpenAI-compatible routes: POST /v1/embeddings, GET /v1/models."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from server.responses import base64_float32, json_response
from server.routes.common import embed, gateway_of, host_of, target_model
from server.schemas.openai import EmbeddingsRequest, EmbeddingsResponse, ModelList, OpenAIError

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

_ERRORS = {status: {"model": OpenAIError} for status in (400, 404, 413, 429, 500, 502, 503, 504)}
_STARTED = int(time.time())


@router.post("/embeddings", response_model=EmbeddingsResponse, responses=_ERRORS)
async def create_embeddings(body: EmbeddingsRequest, request: Request) -> Response:
    """Embeddings in OpenAI's shape; `encoding_format: base64` gives little-endian float32 bytes.
    A model served upstream answers in the same shape."""
    served = target_model(request, body.model, "embed")
    result = await embed(
        request,
        served,
        body.inputs(),
        truncate=body.truncate,
        dimensions=body.dimensions,
        prompt_name=body.prompt_name,
    )
    encode = base64_float32 if body.encoding_format == "base64" else None
    data = [
        {"object": "embedding", "index": i, "embedding": encode(row) if encode else row}
        for i, row in enumerate(result.vectors)
    ]
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": served.spec.id,
            "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
        }
    )


@router.get("/models", response_model=ModelList)
async def list_models(request: Request) -> Response:
    host = host_of(request)
    cards = []
    for spec in host.registry.specs:
        info = host.info(spec.id)
        cards.append(
            {
                "id": spec.id,
                "object": "model",
                "created": _STARTED,
                "owned_by": "embedserve",
                "kind": spec.kind,
                "aliases": list(spec.aliases),
                "status": host.status[spec.id],
                "dimension": info.dimension if info else None,
                "max_length": info.max_length if info else spec.max_length,
                "backend": spec.backend,
                "device": info.device if info else None,
                "dtype": info.dtype if info else None,
                "sparse": info.sparse if info else False,
                "prompts": sorted(info.prompts) if info else [],
                "default_prompt": info.default_prompt if info else None,
                "error": host.errors.get(spec.id),
                "location": "local",
            }
        )
    for upstream in gateway_of(request).models.values():
        spec = upstream.spec
        cards.append(
            {
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
        )
    return json_response({"object": "list", "data": cards})
