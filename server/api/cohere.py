"""Cohere's routes: v2's POST /v2/embed and POST /v2/rerank, and v1's POST /v1/embed, thin translations onto
the same embedding and reranking paths as every other shape. Errors come as `{"id", "message"}`, which
cohere.Client and cohere.ClientV2 read."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from embedserve.models.output_types import OutputType
from embedserve.models.prompts import prompt_for_task
from embedserve.server.api.cohere_schemas import (
    CohereEmbedOptions,
    CohereError,
    V1EmbedRequest,
    V1EmbedResponse,
    V2EmbedRequest,
    V2EmbedResponse,
    V2RerankRequest,
    V2RerankResponse,
)
from embedserve.server.api.common import embed, encoded, target_model
from embedserve.server.api.inference import inference
from embedserve.server.api.rerank import best_first, rerank_documents
from embedserve.server.api.rerank_schemas import RerankOptions
from embedserve.server.http.errors import ApiError
from embedserve.server.http.responses import json_response
from embedserve.server.serving.seam import EmbedParams, ServedModel
from embedserve.server.telemetry.logs import request_id

router = APIRouter(prefix="/v2", tags=["Cohere v2"])
v1_router = APIRouter(prefix="/v1", tags=["Cohere v1"])

_TEXT_ONLY = "image inputs are not supported: this server embeds text"
_ERRORS = {status: {"model": CohereError} for status in (400, 404, 413, 429, 500, 502, 503, 504)}


def _meta(version: str, **billed: int) -> dict:
    return {"api_version": {"version": version}, "billed_units": billed}


def prompt_for(served: ServedModel, input_type: str | None) -> str | None:
    """The model's prompt for a Cohere input type (models.prompts.PROMPTS_FOR_TASK); None where it has none
    (upstreams have none here)."""
    if input_type is None:
        return None
    return prompt_for_task(served.prompts, input_type)


async def _embed_by_type(
    request: Request,
    body: CohereEmbedOptions,
    texts: list[str],
    types: list[OutputType],
    dimensions: int | None = None,
) -> tuple[dict[str, Any], int]:
    """The one embedding path of both versions: `texts` embedded with the prompt of the body's input type,
    as each of `types`; and the tokens they took."""
    if body.input_type == "image":
        raise ApiError(400, _TEXT_ONLY, param="input_type")
    if body.truncate == "START":
        raise ApiError(400, "truncate START is not supported: use END (the default) or NONE", param="truncate")
    served = await target_model(request, body.model, "embed")
    options = EmbedParams(
        truncate=body.truncate == "END",
        dimensions=dimensions,
        prompt_name=prompt_for(served, body.input_type),
    )
    result = await embed(request, served, texts, options)
    embeddings = {
        kind: await encoded(served, result.vectors, kind, dimensions=dimensions) for kind in dict.fromkeys(types)
    }
    return embeddings, result.tokens


@router.post("/embed", response_model=V2EmbedResponse, responses=_ERRORS)
@inference("embed")
async def embed_v2(body: V2EmbedRequest, request: Request) -> Response:
    """Embeddings keyed by type (`embedding_types`): float, base64, int8, uint8, binary, ubinary."""
    if body.max_tokens is not None:
        raise ApiError(400, "max_tokens is not supported: texts are cut at the model's own limit", param="max_tokens")
    try:
        texts = body.all_texts()
    except ValueError as exc:
        raise ApiError(400, str(exc), param="texts") from None
    embeddings, tokens = await _embed_by_type(request, body, texts, body.embedding_types, body.output_dimension)
    return json_response(
        {
            "id": request_id.get(),
            "response_type": "embeddings_by_type",
            "embeddings": embeddings,
            "texts": texts,
            "meta": _meta("2", input_tokens=tokens),
        }
    )


@v1_router.post("/embed", response_model=V1EmbedResponse, responses=_ERRORS)
@inference("embed")
async def embed_v1(body: V1EmbedRequest, request: Request) -> Response:
    """Cohere's v1 embed (`cohere.Client.embed`): float vectors (`embeddings_floats`), or embeddings keyed by
    type when `embedding_types` is given (`embeddings_by_type`, as /v2/embed answers)."""
    if body.images:
        raise ApiError(400, _TEXT_ONLY, param="images")
    texts = list(body.texts)
    embeddings, tokens = await _embed_by_type(request, body, texts, body.embedding_types or ["float"])
    by_type = body.embedding_types is not None
    return json_response(
        {
            "id": request_id.get(),
            "response_type": "embeddings_by_type" if by_type else "embeddings_floats",
            "embeddings": embeddings if by_type else embeddings["float"],
            "texts": texts,
            "meta": _meta("1", input_tokens=tokens),
        }
    )


@router.post("/rerank", response_model=V2RerankResponse, responses=_ERRORS)
@inference("rerank")
async def rerank_v2(body: V2RerankRequest, request: Request) -> Response:
    """The documents' relevance to the query, best first."""
    options = RerankOptions(model=body.model, query=body.query, instruction=body.instruction)
    _, scores = await rerank_documents(request, options, body.documents, "documents")
    results = [{"index": i, "relevance_score": float(scores.values[i])} for i in best_first(scores.values, body.top_n)]
    return json_response({"id": request_id.get(), "results": results, "meta": _meta("2", search_units=1)})
