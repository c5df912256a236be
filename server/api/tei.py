"""TEI's routes beyond /embed, /embed_sparse and /rerank: POST / (what TEI's clients, huggingface_hub's
InferenceClient among them, post to a server's base URL), POST /similarity, /embed_all, /tokenize,
/decode, /predict and GET /info.

Each is a translation onto the same ServedModel calls as the other shapes. TEI serves one model; here
the model is the body's `model`, else the `X-Model` header, else the only one of the kind asked for.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Request
from fastapi.exceptions import RequestValidationError
from pydantic import Discriminator, Tag, TypeAdapter, ValidationError
from starlette.responses import Response

from embedserve.server import __version__
from embedserve.server.api.common import (
    call_model,
    check_count,
    embed,
    gateway_of,
    host_of,
    local_model,
    named,
    target_model,
)
from embedserve.server.api.inference import inference
from embedserve.server.api.native import embed_one
from embedserve.server.api.native_schemas import NativeError, TeiEmbedRequest
from embedserve.server.api.rerank import rerank_tei
from embedserve.server.api.rerank_schemas import TeiRank, TeiRerankRequest
from embedserve.server.api.tei_schemas import (
    DecodeRequest,
    EmbedAllRequest,
    Info,
    Prediction,
    PredictRequest,
    SimilarityRequest,
    SimpleToken,
    TokenizeRequest,
)
from embedserve.server.http.errors import ApiError
from embedserve.server.http.responses import json_response
from embedserve.server.serving.seam import ClassifyParams, EmbedParams, ServedModel

router = APIRouter(tags=["TEI"])

_ERRORS = {status: {"model": NativeError} for status in (400, 404, 413, 422, 429, 500, 502, 503, 504)}


@router.post("/similarity", response_model=list[float], responses=_ERRORS)
@inference("embed")
async def similarity(body: SimilarityRequest, request: Request) -> Response:
    """The cosine similarity of each of `inputs.sentences` to `inputs.source_sentence`."""
    served = await target_model(request, body.model, "embed")
    texts = [body.inputs.source_sentence, *body.inputs.sentences]
    options = EmbedParams(truncate=body.truncate, normalize=True, prompt_name=body.prompt_name)
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


# The shapes POST / takes from any server; where the model is a classifier it takes /predict's instead
# (PredictRequest, with huggingface_hub's `parameters`), which a schema cannot tie to the model served.
_ROOT_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/TeiEmbedRequest"},
                        {"$ref": "#/components/schemas/TeiRerankRequest"},
                        {"$ref": "#/components/schemas/SimilarityRequest"},
                    ]
                }
            }
        },
    }
}


def _validated(schema: Any, value: Any) -> Any:
    """`value` as `schema`, or the 422 every route gives for a body that is not."""
    try:
        return TypeAdapter(schema).validate_python(value)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()], body=value) from None


def _root_kind(request: Request, body: Any) -> str:
    """What POST / does for this body: the kind of the model it names (body or X-Model), else by its
    shape; a body of `inputs` alone goes to a classifier where one is the only kind of model here."""
    given = body.get("model") if isinstance(body, dict) else None
    name = named(request, given if isinstance(given, str) else None)  # not a string: validation says so
    if name is not None:
        spec = host_of(request).registry.find(name)
        if spec is not None:
            return spec.kind
        return "rerank" if gateway_of(request).find(name, "rerank") is not None else "embed"
    shape = _root_shape(body)
    if shape != "embed":
        return shape
    kinds = {spec.kind for spec in host_of(request).registry.specs} | {
        kind for kind in ("embed", "rerank") if gateway_of(request).serving(kind)
    }
    return "classify" if kinds == {"classify"} else "embed"


@router.post(
    "/",
    response_model=list[list[float]] | list[str] | list[TeiRank] | list[float] | list[list[Prediction]],
    responses=_ERRORS,
    openapi_extra=_ROOT_SCHEMA,
)
@inference("embed", "rerank", "classify")
async def tei_root(request: Request, body: Annotated[Any, Body()]) -> Response:
    """TEI's base route: `{"inputs": {"source_sentence", "sentences"}}` is a similarity, `{"query",
    "texts"}` a rerank, `{"inputs": ...}` an embedding, or a classification when the model named (or the
    only one served) is a classifier: answered as huggingface_hub's text_classification reads it, a list
    of `{label, score}` lists, best first."""
    kind = _root_kind(request, body)
    if kind == "classify":
        return await _classify(request, _validated(PredictRequest, body), nested=True)
    if isinstance(body, dict) and "parameters" in body:
        if body["parameters"] not in (None, {}):
            raise ApiError(
                400,
                f"`parameters` (top_k, function_to_apply) apply to a classification model; this request goes to "
                f"a {kind} model: name a classifier with `model` or X-Model",
                param="parameters",
            )
        body = {key: value for key, value in body.items() if key != "parameters"}
    parsed = _validated(RootBody, body)
    if isinstance(parsed, SimilarityRequest):
        return await similarity(parsed, request)
    if isinstance(parsed, TeiRerankRequest):
        return await rerank_tei(parsed, request)
    return await embed_one(parsed, request)


@router.post("/predict", response_model=list[Prediction] | list[list[Prediction]], responses=_ERRORS)
@inference("classify")
async def predict(body: PredictRequest, request: Request) -> Response:
    """Label scores of a sequence-classification model, best first: one list for a text or a pair, a
    list per input for a batch. Probabilities by softmax (sigmoid for one label) unless `raw_scores`."""
    return await _classify(request, body, nested=False)


async def _classify(request: Request, body: PredictRequest, *, nested: bool) -> Response:
    inputs, batched = body.batch()
    served = await target_model(request, body.model, "classify")
    check_count(request, len(inputs))
    parameters = body.parameters
    function = parameters.function_to_apply if parameters else None  # it wins over raw_scores
    options = ClassifyParams(
        truncate=body.truncate,
        function=function or ("none" if body.raw_scores else None),
        prompt_name=body.prompt_name,
    )
    result = await call_model(request, lambda call: served.classify(inputs, options, call))
    labels = host_of(request).info(served.spec.id).labels  # type: ignore[union-attr]
    top_k = parameters.top_k if parameters else None
    answers = [
        [{"score": float(row[i]), "label": labels[i]} for i in np.argsort(-row, kind="stable")[:top_k]]
        for row in result.values
    ]
    return json_response(answers if batched or nested else answers[0])


@router.post("/embed_all", response_model=list[list[list[float]]], responses=_ERRORS)
@inference("embed", batcher="tokens")
async def embed_all(body: EmbedAllRequest, request: Request) -> Response:
    """Every token's vector (the last hidden state, special tokens included), per text."""
    served = await target_model(request, body.model, "embed")
    texts = body.texts()
    check_count(request, len(texts))
    options = EmbedParams(
        truncate=body.truncate, prompt_name=body.prompt_name, max_tokens=request.app.state.settings.max_token_vectors
    )
    result = await call_model(request, lambda call: served.embed_tokens(texts, options, call))
    return json_response([vectors.tolist() for vectors in result.vectors])


async def _any_model(request: Request, name: str | None) -> ServedModel:
    """The model a tokenizer route names, whatever its kind; with no name, the only one served here."""
    name = named(request, name)
    host = host_of(request)
    if name is None:
        specs = host.registry.specs
        if len(specs) != 1:
            ids = ", ".join(spec.id for spec in specs) or "none"
            raise ApiError(
                400, f"{len(specs)} models are served here ({ids}): name one with `model` or X-Model", param="model"
            )
        return await local_model(request, specs[0].id, specs[0].kind)
    spec = host.registry.find(name)
    return await target_model(request, name, spec.kind if spec is not None else "embed")


@router.post("/tokenize", response_model=list[list[SimpleToken]], responses=_ERRORS)
async def tokenize(body: TokenizeRequest, request: Request) -> Response:
    """How the model's tokenizer splits each text: ids, their text, and the characters they cover."""
    served = await _any_model(request, body.model)
    texts = body.texts()
    check_count(request, len(texts))
    spans = await served.describe(texts, add_special_tokens=body.add_special_tokens, prompt_name=body.prompt_name)
    return json_response(
        [
            [{"id": t.id, "text": t.text, "special": t.special, "start": t.start, "stop": t.stop} for t in row]
            for row in spans
        ]
    )


@router.post("/decode", response_model=list[str], responses=_ERRORS)
async def decode(body: DecodeRequest, request: Request) -> Response:
    """Token ids back to text, one string per sequence."""
    served = await _any_model(request, body.model)
    sequences = body.sequences()
    check_count(request, len(sequences))
    return json_response(await served.decode(sequences, skip_special_tokens=body.skip_special_tokens))


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
    return json_response(
        {
            "model_id": spec.id,
            "model_sha": None,
            "model_dtype": loaded.dtype if loaded else spec.dtype,
            "model_type": _model_type(spec.kind, loaded.labels if loaded else ()),
            "max_concurrent_requests": settings.connection_limit(),
            "max_input_length": loaded.max_length if loaded else spec.max_length,
            "max_batch_tokens": host.limits(spec.id).max_batch_tokens,
            "max_batch_requests": None,
            "max_client_batch_size": settings.max_inputs,
            "auto_truncate": True,
            "tokenization_workers": 2,
            "version": __version__,
            "sha": None,
            "docker_label": None,
        }
    )


def _model_type(kind: str, labels: tuple[str, ...]) -> dict:
    """TEI's model_type: an embedding model, or a reranker / classifier with its labels."""
    if kind == "embed":
        return {"embedding": {"pooling": None}}
    names = {
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    return {"classifier" if kind == "classify" else "reranker": names}
