"""Native routes: POST /embed (one text) and POST /batch-embed (many)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from server.responses import json_response
from server.routes.common import embed, served_model
from server.schemas.native import BatchEmbedRequest, BatchEmbedResponse, EmbedRequest, EmbedResponse, NativeError

router = APIRouter(tags=["native"])

_ERRORS = {status: {"model": NativeError} for status in (400, 404, 413, 422, 429, 500, 503)}


@router.post("/embed", response_model=EmbedResponse, responses=_ERRORS)
async def embed_one(body: EmbedRequest, request: Request) -> Response:
    served = served_model(request, body.model)
    result = await embed(
        request, served, [body.text], truncate=body.truncate, normalize=body.normalize, dimensions=body.dimensions
    )
    vector = result.vectors[0]
    return json_response({"embedding": vector, "model": served.spec.id, "dim": len(vector), "tokens": result.tokens})


@router.post("/batch-embed", response_model=BatchEmbedResponse, responses=_ERRORS)
async def embed_many(body: BatchEmbedRequest, request: Request) -> Response:
    served = served_model(request, body.model)
    result = await embed(
        request, served, body.texts, truncate=body.truncate, normalize=body.normalize, dimensions=body.dimensions
    )
    return json_response(
        {
            "embeddings": result.vectors,
            "model": served.spec.id,
            "dim": result.vectors.shape[1],
            "tokens": result.tokens,
            "count": len(result.vectors),
        }
    )
