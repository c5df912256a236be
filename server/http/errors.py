"""API errors, and the one place that renders them for the wire, in three shapes by route:

/v1 routes answer in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`;
Cohere's routes (/v2, and v1's /v1/embed) in Cohere's, `{"id": request id, "message"}`;
native routes in TEI's, `{"error": message, "error_type": type}`.

Every error answer's body and headers come from `rendered`, whoever sends it: the exception handlers
(`error_response`), the pure-ASGI middlewares (`send_error`) and the HTTP protocol itself
(server/http/protocol.py), so an error reads the same whichever layer refused the request.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Send

from embedserve.batching.errors import BatcherError, BatchFailed, QueueFull, RequestTooLarge, ShuttingDown
from embedserve.models.errors import InputTooLong, InvalidInput, ModelError, ModelNotReady, UnknownModel
from embedserve.server.http.disconnect import ClientDisconnected
from embedserve.server.serving.residency import OverBudget
from embedserve.server.serving.upstream.client import UpstreamError
from embedserve.server.telemetry.logs import request_id

# OpenAI error types by status; native error types by status.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_NATIVE_TYPES = {
    400: "Validation",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    408: "Timeout",
    413: "PayloadTooLarge",
    422: "Validation",
    429: "Overloaded",
    502: "Upstream",
    503: "Unavailable",
    504: "Timeout",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/")


_COHERE_V1_PATHS = frozenset({"/v1/embed"})


def is_cohere_path(path: str) -> bool:
    """Cohere's routes: every /v2 route, and the /v1 ones of Cohere's v1 API (which OpenAI's /v1 shares)."""
    return path.startswith("/v2/") or path in _COHERE_V1_PATHS


def _error_body(path: str, error: ApiError) -> bytes:
    if is_cohere_path(path):  # Cohere's shape: what cohere.Client and ClientV2 read as the error's message
        return orjson.dumps({"id": request_id.get(), "message": error.message})
    if is_openai_path(path):
        kind = _OPENAI_TYPES.get(error.status, "server_error")
        return orjson.dumps(
            {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}}
        )
    return orjson.dumps({"error": error.message, "error_type": _NATIVE_TYPES.get(error.status, "Backend")})


def rendered(path: str, error: ApiError) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """An error's body in `path`'s shape, and its headers: the error's own, then content-length and
    content-type (the order Starlette's Response gives them)."""
    body = _error_body(path, error)
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items()]
    headers += [(b"content-length", str(len(body)).encode("latin-1")), (b"content-type", b"application/json")]
    return body, headers


def error_response(path: str, error: ApiError) -> Response:
    """An error as a Response: what exception handlers return."""
    body, headers = rendered(path, error)
    response = Response(body, status_code=error.status)
    response.raw_headers = headers
    return response


async def send_error(send: Send, path: str, error: ApiError) -> None:
    """Answers with an error from a pure-ASGI layer, before any route."""
    body, headers = rendered(path, error)
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(app: Any, path: str) -> list[str]:
    """Every method some route of the app fully matches at `path` (asked the way the router asks)."""
    from starlette.routing import Match

    def served(method: str) -> bool:
        scope = {"type": "http", "path": path, "root_path": "", "method": method, "headers": []}
        return any(route.matches(scope)[0] == Match.FULL for route in app.routes)

    return [method for method in _METHODS if served(method)]


def as_api_error(exc: BaseException) -> ApiError:
    """Maps errors of the lower layers to statuses."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnknownModel):
        if exc.name is None and exc.served:  # several models could serve it: the request must say which
            return ApiError(400, str(exc), param="model", code="model_required")
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, OverBudget):  # 503, not 507: the server is fine, this model cannot be served now
        return ApiError(503, str(exc), code="over_memory_budget", headers={"Retry-After": "5"} if exc.retry else None)
    if isinstance(exc, ModelNotReady):
        return ApiError(503, str(exc), code="model_not_ready", headers={"Retry-After": "5"})
    if isinstance(exc, InputTooLong):
        return ApiError(413, str(exc), param=exc.param, code="input_too_long")
    if isinstance(exc, InvalidInput):
        return ApiError(400, str(exc), param=exc.param)
    if isinstance(exc, QueueFull):
        retry = str(max(1, round(exc.retry_after)))
        return ApiError(429, str(exc), code="overloaded", headers={"Retry-After": retry})
    if isinstance(exc, RequestTooLarge):
        return ApiError(413, str(exc), code="request_too_large")
    if isinstance(exc, ShuttingDown):
        return ApiError(503, str(exc), code="shutting_down", headers={"Retry-After": "1"})
    if isinstance(exc, UpstreamError):
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return ApiError(exc.status, str(exc), code=exc.code, headers=headers)
    if isinstance(exc, ClientDisconnected):
        return ApiError(499, "the client closed the request", code="client_closed_request")
    if isinstance(exc, BatchFailed):
        return ApiError(500, str(exc), code="inference_failed")
    return ApiError(500, "internal server error", code="internal_error")


# Fields typed as unions fail once per alternative; one sentence says what is accepted instead.
_UNION_FIELDS = {
    "input": "must be a non-empty string, an array of non-empty strings, an array of token ids (integers >= 0), "
    "or an array of such arrays",
}


# Parts of a validation error's location that are not fields: the body itself and union tags.
_NOT_FIELDS = {"body", "native", "tei"}


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str | None]:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return 400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}", None
    loc = [part for part in first.get("loc", ()) if part not in _NOT_FIELDS]
    if not loc:
        return 422, "the body must be a JSON object", None
    field = str(loc[0])
    if field in _UNION_FIELDS:
        return 422, f"'{field}' {_UNION_FIELDS[field]}", field
    param = ".".join(str(part) for part in loc)
    return 422, f"'{param}': {first.get('msg', 'invalid value')}", param


def validation_error(path: str, exc: RequestValidationError) -> ApiError:
    """A body that does not validate, as the route at `path` refuses it."""
    status, message, param = _validation_message(exc)
    # OpenAI and Cohere answer every malformed body with 400.
    if is_openai_path(path) or is_cohere_path(path):
        status = 400
    return ApiError(status, message, param=param)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> Response:
        return error_response(request.url.path, as_api_error(exc))

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(request.url.path, validation_error(request.url.path, exc))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail: Any = exc.detail
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and detail == "Not Found":  # no route at all: say which was asked for
            detail = f"there is no route {request.method} {request.url.path}"
        if exc.status_code == 405:  # Starlette names the methods of the first route that matched the path only
            allowed = allowed_methods(request.app, request.url.path)
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}"
        return error_response(request.url.path, ApiError(exc.status_code, str(detail), headers=headers))

    for known in (ApiError, ModelError, BatcherError, ClientDisconnected, UpstreamError):
        app.add_exception_handler(known, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    # Anything else is a bug: Starlette's outermost layer answers 500 (in our shape) and logs it.
    app.add_exception_handler(Exception, on_api_error)
