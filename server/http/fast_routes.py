"""The inference routes' well-formed requests, served without FastAPI's per-request machinery.

FastAPI's route handling (dependency solving, its body reading and `json.loads`, validation through
its field wrapper, the included routers' layers) cost about a quarter of the event loop's CPU per
short embedding request, in-process with the hashing backend (222 -> 170 us with this). A
`FastRoute` sits in front of each inference route's FastAPI route and calls the same endpoint
function, with the body validated straight from its bytes by pydantic's own JSON parser.

Only a body that is JSON by its content type, that pydantic's parser reads, and that validates is
served here. Anything else (an empty or non-JSON body, a byte-order mark, a lone surrogate, a
validation error) is handed on to the FastAPI route with its body replayed, so every error answer is
FastAPI's and our handlers', as before. The FastAPI routes stay what the OpenAPI schema documents.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, get_type_hints

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from pydantic import TypeAdapter, ValidationError
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

HANDED_ON = "embedserve.handed_on"
"""In a request's scope once its FastRoute handed it to the FastAPI route (which then matches it)."""


def _json_content(scope: Scope) -> bool:
    """Whether the body is JSON by its content type: application/json. Other JSON types (`+json`) are
    FastAPI's to read, and a body with no content type it refuses (its strict default)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """The request's messages again: its whole body first, then whatever comes (the disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class _Serve:
    """One FastRoute's ASGI app: parse, then the endpoint, or hand the request on."""

    def __init__(self, schema: TypeAdapter[Any], endpoint: Callable[..., Awaitable[Response]], names: tuple[str, str]):
        self.schema = schema
        self.endpoint = endpoint
        self.body_name, self.request_name = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        declined: bytes | None = None

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal declined
            body = await request.body()  # within the handlers: a 413 or 408 while reading is answered
            if not body or not _json_content(scope):
                declined = body
                return
            try:
                parsed = self.schema.validate_json(body)
            except ValidationError:
                declined = body
                return
            response = await self.endpoint(**{self.body_name: parsed, self.request_name: request})
            await response(scope, receive, send)

        await wrap_app_handling_exceptions(serve, request)(scope, receive, send)
        if declined is not None:
            scope[HANDED_ON] = True
            await scope["app"].router(scope, _replay(declined, receive), send)


class FastRoute(Route):
    """POST `path`, served by `route`'s endpoint when the body is well-formed; else by `route` itself."""

    def __init__(self, route: APIRoute) -> None:
        dependant = route.dependant
        others = (
            dependant.dependencies,
            dependant.path_params,
            dependant.query_params,
            dependant.header_params,
            dependant.cookie_params,
        )
        if any(others) or len(dependant.body_params) != 1 or dependant.request_param_name is None:
            raise TypeError(f"{route.path}: a fast route's endpoint takes its body and the Request, nothing else")
        hints = get_type_hints(route.endpoint)
        if not (isinstance(hints.get("return"), type) and issubclass(hints["return"], Response)):
            raise TypeError(f"{route.path}: a fast route's endpoint returns a Response (nothing serializes for it)")
        body_name = dependant.body_params[0].name
        schema = TypeAdapter(hints[body_name])
        endpoint = _Serve(schema, route.endpoint, (body_name, dependant.request_param_name))
        super().__init__(route.path, endpoint, methods=["POST"], include_in_schema=False)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if HANDED_ON in scope:
            return Match.NONE, {}
        return super().matches(scope)


def install_fast_routes(app: FastAPI, routers: Iterable[APIRouter], paths: Iterable[str]) -> None:
    """Puts a FastRoute in front of each POST route of `routers` at one of `paths`."""
    wanted = set(paths)
    fast = [
        FastRoute(route)
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and route.path in wanted and "POST" in route.methods
    ]
    app.router.routes[:0] = fast
