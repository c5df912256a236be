"""Native routes: POST /embed (one text, or TEI's body), POST /batch-embed (many), POST /embed_sparse (TEI's shape)."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from embedserve.models.types import Embeddings
from embedserve.server.api.common import call_model, check_count, embed, encoded, target_model
from embedserve.server.api.inference import inference
from embedserve.server.api.native_schemas import (
    BatchEmbedRequest,
    BatchEmbedResponse,
    EmbedBody,
    EmbedOptions,
    EmbedResponse,
    EmbedSparseRequest,
    NativeError,
    SparseValue,
    TeiEmbedRequest,
)
from embedserve.server.http.responses import json_response
from embedserve.server.serving.seam import EmbedParams

router = APIRouter(tags=["native"])

_ERRORS = {status: {"model": NativeError} for status in (400, 404, 413, 422, 429, 500, 502, 503, 504)}


async def _embed_texts(
    request: Request, body: EmbedOptions | TeiEmbedRequest, texts: list[str]
) -> tuple[str, Embeddings, np.ndarray | list]:
    """The model's id, the embeddings, and the vectors in the body's embedding_type."""
    served = await target_model(request, body.model, "embed")
    options = EmbedParams(
        truncate=body.truncate, normalize=body.normalize, dimensions=body.dimensions, prompt_name=body.prompt_name
    )
    result = await embed(request, served, texts, options)
    rows = await encoded(served, result.vectors, body.embedding_type, dimensions=body.dimensions)
    return served.spec.id, result, rows


@router.post("/embed", response_model=EmbedResponse | list[list[float]] | list[str], responses=_ERRORS)
@inference("embed")
async def embed_one(body: EmbedBody, request: Request) -> Response:
    """`{"text"}` gets `{"embedding", "model", "dim", "tokens"}`; TEI's `{"inputs"}` gets TEI's list of vectors."""
    if isinstance(body, TeiEmbedRequest):
        _, _, rows = await _embed_texts(request, body, body.texts())
        return json_response(rows)
    model, result, rows = await _embed_texts(request, body, [body.text])
    dim = result.vectors.shape[1]
    return json_response({"embedding": rows[0], "model": model, "dim": dim, "tokens": result.tokens})


@router.post("/batch-embed", response_model=BatchEmbedResponse, responses=_ERRORS)
@inference("embed")
async def embed_many(body: BatchEmbedRequest, request: Request) -> Response:
    model, result, rows = await _embed_texts(request, body, body.texts)
    count, dim = result.vectors.shape
    return json_response({"embeddings": rows, "model": model, "dim": dim, "tokens": result.tokens, "count": count})


@router.post("/embed_sparse", response_model=list[list[SparseValue]], responses=_ERRORS)
@inference("embed", batcher="sparse")
async def embed_sparse(body: EmbedSparseRequest, request: Request) -> Response:
    """Sparse lexical weights (bge-m3's sparse head), one list of `{index: token id, value}` per text."""
    served = await target_model(request, body.model, "embed")
    texts = body.texts()
    check_count(request, len(texts))
    options = EmbedParams(truncate=body.truncate, prompt_name=body.prompt_name)
    result = await call_model(request, lambda call: served.embed_sparse(texts, options, call))
    return json_response(
        [
            [{"index": int(i), "value": float(v)} for i, v in zip(vector.indices, vector.values)]
            for vector in result.vectors
        ]
    )
