"""Jina's multi-vector route: POST /v1/multi-vector, per text its ColBERT rows (bge-m3's colbert_linear.pt),
a thin translation onto the seam's `embed_multivector`. Errors come in OpenAI's shape, as on every /v1 route.

Jina's own API has no TEI counterpart, and TEI's /embed_all already means the last hidden state: a sibling
route with Jina's shape is what its clients (and Weaviate's text2colbert-jinaai, given this base URL) post.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request
from starlette.responses import Response

from embedserve.server.api.cohere import prompt_for
from embedserve.server.api.common import call_model, check_count, target_model
from embedserve.server.api.inference import inference
from embedserve.server.api.jina_schemas import MultiVectorRequest, MultiVectorResponse
from embedserve.server.api.openai_schemas import OpenAIError
from embedserve.server.http.responses import json_response
from embedserve.server.serving.seam import EmbedParams

router = APIRouter(prefix="/v1", tags=["Jina"])

_ERRORS = {status: {"model": OpenAIError} for status in (400, 404, 413, 429, 500, 502, 503, 504)}
_COHERE_TYPE = {"query": "search_query", "document": "search_document"}


@router.post("/multi-vector", response_model=MultiVectorResponse, responses=_ERRORS)
@inference("embed", batcher="multivector")
async def multi_vector(body: MultiVectorRequest, request: Request) -> Response:
    """Per text, one L2-normalized row per token (the first token left out), as bge-m3's ColBERT output."""
    served = await target_model(request, body.model, "embed")
    texts = body.texts()
    check_count(request, len(texts))
    options = EmbedParams(
        truncate=body.truncate,
        dimensions=body.dimensions,
        prompt_name=prompt_for(served, _COHERE_TYPE[body.input_type]),
        max_tokens=request.app.state.settings.max_token_vectors,
    )
    result = await call_model(request, lambda call: served.embed_multivector(texts, options, call))
    rows: list[list[list[float]] | list[str]] = (
        [[base64.b64encode(row.astype("<f4").tobytes()).decode() for row in vectors] for vectors in result.vectors]
        if body.embedding_type == "base64"
        else [vectors.tolist() for vectors in result.vectors]
    )
    return json_response(
        {
            "model": served.spec.id,
            "object": "list",
            "usage": {"total_tokens": result.tokens},
            "data": [{"object": "embeddings", "index": i, "embeddings": r} for i, r in enumerate(rows)],
        }
    )
