"""Reranking routes: POST /v1/rerank (Cohere / Jina shape) and POST /rerank (TEI's shape)."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from embedserve.models.backend import MULTIVECTOR
from embedserve.models.errors import UnknownModel
from embedserve.models.types import Scores
from embedserve.server.api.common import call_model, target_model
from embedserve.server.api.inference import inference
from embedserve.server.api.native_schemas import NativeError
from embedserve.server.api.openai_schemas import OpenAIError
from embedserve.server.api.rerank_schemas import RerankOptions, RerankRequest, RerankResponse, TeiRank, TeiRerankRequest
from embedserve.server.http.errors import ApiError
from embedserve.server.http.responses import json_response
from embedserve.server.serving.seam import RerankParams
from embedserve.server.telemetry.logs import request_id

router = APIRouter(tags=["reranking"])

_STATUSES = (400, 404, 413, 429, 500, 502, 503, 504)


async def rerank_documents(
    request: Request, body: RerankOptions, documents: list[str], param: str
) -> tuple[str, Scores]:
    """The one path of every rerank shape: the model (here or upstream), limits, the scores. An embedding
    model with bge-m3's multi-vector head, named as the reranker, scores by late interaction (LocalModel.rerank
    says how); any other embedding model is not a reranker (404)."""
    try:
        served = await target_model(request, body.model, "rerank")
    except UnknownModel as exc:
        if exc.served_as != "embed":
            raise
        served = await target_model(request, body.model, "embed")
        if MULTIVECTOR not in served.outputs:
            raise exc from None
    limit = request.app.state.settings.max_documents
    if len(documents) > limit:
        raise ApiError(413, f"too many {param}: {len(documents)}; the limit is {limit} per request", param=param)
    if body.weights is not None and not sum(body.weights) > 0:
        raise ApiError(400, "weights must not all be 0", param="weights")
    options = RerankParams(
        truncate=body.truncate,
        raw_scores=body.raw_scores,
        prompt_name=body.prompt_name,
        instruction=body.instruction,
        mode=body.mode,
        **({"weights": tuple(body.weights)} if body.weights is not None else {}),
    )
    scores = await call_model(request, lambda call: served.rerank(body.query, documents, options, call))
    return served.spec.id, scores


def best_first(scores: np.ndarray, top_n: int | None = None) -> list[int]:
    """Indices by descending score; ties keep the documents' order."""
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order[:top_n]]


@router.post("/v1/rerank", response_model=RerankResponse, responses={s: {"model": OpenAIError} for s in _STATUSES})
@inference("rerank")
async def rerank(body: RerankRequest, request: Request) -> Response:
    """Scores each document against the query, best first (Cohere / Jina / Infinity shape)."""
    texts = body.texts()
    model, scores = await rerank_documents(request, body, texts, "documents")
    results = []
    for i in best_first(scores.values, body.top_n):
        result: dict = {"index": i, "relevance_score": float(scores.values[i])}
        if body.return_documents:
            result["document"] = {"text": texts[i]}
        results.append(result)
    return json_response(
        {
            "id": request_id.get(),
            "object": "rerank",
            "model": model,
            "results": results,
            "usage": {"prompt_tokens": scores.tokens, "total_tokens": scores.tokens},
        }
    )


@router.post("/rerank", response_model=list[TeiRank], responses={s: {"model": NativeError} for s in (*_STATUSES, 422)})
@inference("rerank")
async def rerank_tei(body: TeiRerankRequest, request: Request) -> Response:
    """TEI's /rerank: `[{"index", "score", "text"?}]`, best first."""
    model, scores = await rerank_documents(request, body, body.texts, "texts")
    ranks = []
    for i in best_first(scores.values):
        rank: dict = {"index": i, "score": float(scores.values[i])}
        if body.return_text:
            rank["text"] = body.texts[i]
        ranks.append(rank)
    return json_response(ranks)
