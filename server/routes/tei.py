"""TEI's routes beyond /embed, /embed_sparse and /rerank: POST / (what TEI's clients, huggingface_hub's
InferenceClient among them, post to a server's base URL), POST /similarity and GET /info.

Each is a translation onto the same paths as the other shapes. TEI serves one model; here the model is
the body's `model`, else the `X-Model` header, else the only one of the kind asked for.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Request
from pydantic import Discriminator, Tag
from starlette.responses import Response

from server import __version__
from server.errors import ApiError
from server.responses import json_response
from server.routes.common import embed, host_of, named, target_model
from server.routes.native import embed_one
from server.routes.rerank import rerank_tei
from server.schemas.native import NativeError, TeiEmbedRequest
from server.schemas.rerank import TeiRank, TeiRerankRequest
from server.schemas.tei import Info, SimilarityRequest
from server.serving import EmbedOptions

router = APIRouter(tags=["TEI"])

_ERRORS = {status: {"model": NativeError} for status in (400, 404, 413, 422, 429, 500, 502, 503, 504)}


@router.post("/similarity", response_model=list[float], responses=_ERRORS)
async def similarity(body: SimilarityRequest, request: Request) -> Response:
    """The cosine similarity of each of `inputs.sentences` to `inputs.source_sentence`."""
    served = target_model(request, body.model, "embed")
    texts = [body.inputs.source_sentence, *body.inputs.sentences]
    options = EmbedOptions(truncate=body.truncate, normalize=True, prompt_name=body.prompt_name)
    result = await embed(request, served, texts, options)
    source, others = result.vectors[0], result.vectors[1:]
    return json_response((others @ source / np.maximum(np.linalg.norm(others, axis=1), 1e-12)).tolist())


def _root_shape(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("inputs"), dict):
        return "similarity"
    if isinstance(value, dict) and ("query" in value or "texts" in value):
        return "rerank"
    return "embed"


RootBody = Annotated[
    Annotated[TeiEmbedRequest, Tag("embed")]
    | Annotated[TeiRerankRequest, Tag("rerank")]
    | Annotated[SimilarityRequest, Tag("similarity")],
    Discriminator(_root_shape),
]


@router.post("/", response_model=list[list[float]] | list[TeiRank] | list[float], responses=_ERRORS)
async def tei_root(body: RootBody, request: Request) -> Response:
    """TEI's base route: `{"inputs": {"source_sentence", "sentences"}}` is a similarity, `{"query",
    "texts"}` a rerank, and `{"inputs": text or texts}` an embedding."""
    if isinstance(body, SimilarityRequest):
        return await similarity(body, request)
    if isinstance(body, TeiRerankRequest):
        return await rerank_tei(body, request)
    return await embed_one(body, request)


@router.get("/info", response_model=Info, responses={400: {"model": NativeError}, 404: {"model": NativeError}})
async def info(request: Request) -> Response:
    """TEI's description of the model (named by `?model=` or X-Model; default: the only one served here)."""
    host = host_of(request)
    name = named(request, request.query_params.get("model"))
    if name is None:
        specs = list(host.registry.specs)
    else:
        found = host.registry.find(name)
        specs = [found] if found is not None else []
    if not specs:
        raise ApiError(404, f"model {name!r} is not served here", param="model")
    if len(specs) > 1:
        ids = ", ".join(spec.id for spec in specs)
        raise ApiError(400, f"several models are served ({ids}): name one with ?model= or X-Model", param="model")
    spec = specs[0]
    loaded = host.info(spec.id)
    settings = request.app.state.settings
    batching = host.batching[spec.id]
    return json_response(
        {
            "model_id": spec.id,
            "model_sha": None,
            "model_dtype": loaded.dtype if loaded else spec.dtype,
            "model_type": {"embedding": {"pooling": None}} if spec.kind == "embed" else {"reranker": {}},
            "max_concurrent_requests": settings.connection_limit(),
            "max_input_length": loaded.max_length if loaded else spec.max_length,
            "max_batch_tokens": batching.max_batch_tokens,
            "max_batch_requests": None,
            "max_client_batch_size": settings.max_inputs,
            "auto_truncate": True,
            "tokenization_workers": 2,
            "version": __version__,
            "sha": None,
            "docker_label": None,
        }
    )
