"""The admin API for upstream endpoints at run time, guarded by the admin key:
GET /v1/backends (list), POST /v1/backends (add an endpoint), DELETE /v1/backends?model=&url= (remove one).
With a models file in use, changes are written back to it and survive a restart."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from embedserve.server.api.common import gateway_of
from embedserve.server.api.openai_schemas import OpenAIError
from embedserve.server.http.errors import ApiError
from embedserve.server.http.responses import json_response
from embedserve.server.serving.upstream.config import EndpointSpec
from embedserve.server.serving.upstream.gateway import EndpointConflict

ADMIN_PATHS = ("/v1/backends", "/v1/backends/*")
"""Left alone by the callers' auth and rate limits: these routes check the admin key themselves."""


def require_admin(request: Request) -> None:
    key = request.app.state.settings.admin_key
    if key is None:
        raise ApiError(403, "the admin API is off: set EMBEDSERVE_ADMIN_KEY to turn it on", code="admin_disabled")
    given = request.headers.get("x-api-key")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        given = token.strip()
    if not given or not hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise ApiError(
            401,
            "the admin API needs the admin key (Authorization: Bearer KEY)",
            code="invalid_admin_key",
            headers={"WWW-Authenticate": 'Bearer realm="embedserve-admin"'},
        )


router = APIRouter(
    prefix="/v1/backends",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={s: {"model": OpenAIError} for s in (400, 401, 403, 404, 409)},
)


class NewEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The id of an upstream model entry.")
    url: str = Field(description="The endpoint's base URL.")
    weight: int = Field(1, ge=1, le=1000)


def _upstream(request: Request, model: str):  # type: ignore[no-untyped-def]
    upstream = gateway_of(request).models.get(model)
    if upstream is None:
        known = ", ".join(gateway_of(request).models) or "none"
        raise ApiError(404, f"{model!r} is not an upstream model; upstream models: {known}", param="model")
    return upstream


@router.get("")
async def list_backends(request: Request) -> Response:
    data = [
        {
            "model": m.spec.id,
            "protocol": m.spec.protocol,
            "serves": list(m.spec.serves),
            "upstream_model": m.spec.remote_name,
            "balance": m.spec.balance,
            "endpoints": [e.snapshot() for e in m.balancer.endpoints],
        }
        for m in gateway_of(request).models.values()
    ]
    return json_response({"object": "list", "data": data})


@router.post("", status_code=201)
async def add_backend(body: NewEndpoint, request: Request) -> Response:
    upstream = _upstream(request, body.model)
    try:
        endpoint = EndpointSpec(url=body.url, weight=body.weight)
    except ValidationError:
        raise ApiError(400, f"{body.url!r} is not an http(s) base URL", param="url") from None
    try:
        persisted = await gateway_of(request).add_endpoint(body.model, endpoint)
    except EndpointConflict as exc:
        raise ApiError(409, str(exc), param="url") from None
    added = upstream.balancer.find(endpoint.url)
    return json_response({"model": body.model, "endpoint": added.snapshot(), "persisted": persisted}, 201)


@router.delete("")
async def remove_backend(
    request: Request,
    model: str = Query(description="The upstream model's id."),
    url: str = Query(description="The endpoint's base URL."),
) -> Response:
    _upstream(request, model)
    try:
        persisted = await gateway_of(request).remove_endpoint(model, url)
    except KeyError:
        raise ApiError(404, f"{url!r} is not an endpoint of {model!r}", param="url") from None
    except EndpointConflict as exc:
        raise ApiError(409, str(exc), param="url") from None
    return json_response({"model": model, "url": url.rstrip("/"), "deleted": True, "persisted": persisted})
