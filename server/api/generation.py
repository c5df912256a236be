"""Generation relayed to upstreams by model name: POST /v1/chat/completions, /v1/completions and
/v1/images/generations. embedserve runs no generation model; bodies and answers pass unchanged (but for
the model's upstream name), streamed answers (SSE) chunk by chunk as they arrive."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from embedserve.server.api.common import deadline_in, deadline_seconds, gateway_of, run_within_deadline
from embedserve.server.api.openai_schemas import OpenAIError
from embedserve.server.http import calls
from embedserve.server.http.errors import ApiError

router = APIRouter(prefix="/v1", tags=["generation (relayed upstream)"])

# Headers of the upstream's answer worth relaying; the rest are hop-by-hop or ours to set.
_RELAYED_HEADERS = ("content-type", "cache-control", "openai-processing-ms", "x-ratelimit-remaining-requests")

_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {"model": {"type": "string"}, "stream": {"type": "boolean"}},
                    "additionalProperties": True,
                }
            }
        },
    },
    "responses": {
        "200": {
            "description": "The upstream's answer, unchanged: JSON, or server-sent events when `stream` is true.",
            "content": {"application/json": {"schema": {}}, "text/event-stream": {"schema": {"type": "string"}}},
        }
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": OpenAIError} for s in (400, 404, 413, 429, 502, 503, 504)}


async def _relay(request: Request, capability: str) -> Response:
    body = await request.body()
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    name = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(name, str) or not name:
        raise ApiError(400, "'model' is required: the name of an upstream model that serves this route", param="model")
    gateway = gateway_of(request)
    upstream = gateway.find(name, capability)
    if upstream is None:
        served = ", ".join(m.spec.id for m in gateway.serving(capability)) or "none"
        raise ApiError(
            404,
            f"model {name!r} is not served for {capability}; served: {served}",
            param="model",
            code="model_not_found",
        )
    calls.current().model = upstream.spec.id
    remote = upstream.spec.remote_name
    content = body if name == remote else orjson.dumps({**payload, "model": remote})
    headers = {"accept": request.headers.get("accept", "*/*")}
    seconds = deadline_seconds(request)
    relay = await run_within_deadline(
        request, upstream.relay(capability, content, headers, deadline_in(seconds)), seconds
    )
    answer = relay.response

    async def chunks():  # type: ignore[no-untyped-def]
        try:
            async for chunk in answer.aiter_bytes():
                yield chunk
        finally:
            await relay.close()

    kept = {k: v for k, v in answer.headers.items() if k.lower() in _RELAYED_HEADERS}
    return StreamingResponse(
        chunks(), status_code=answer.status_code, headers=kept, background=BackgroundTask(relay.close)
    )


@router.post("/chat/completions", openapi_extra=_DOC, responses=_ERRORS)
async def chat_completions(request: Request) -> Response:
    return await _relay(request, "chat")


@router.post("/completions", openapi_extra=_DOC, responses=_ERRORS)
async def completions(request: Request) -> Response:
    return await _relay(request, "completions")


@router.post("/images/generations", openapi_extra=_DOC, responses=_ERRORS)
async def image_generations(request: Request) -> Response:
    return await _relay(request, "images")
