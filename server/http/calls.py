"""Each request's `Call` (server.serving.seam): made once, as the request comes in, by the outermost
middleware (server.http.middleware), and filled by whoever learns a part of it: the guard its caller and
token admission, the route its deadline and the model that serves it. The route passes it down to
the model as an argument; the middleware reads back which model served, for the request's metrics,
trace and access log.

It travels in a context variable, not in the ASGI scope: every layer between the middleware and
the route runs in the request's own task (sync endpoints run with a copy of its context).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar, Token

from embedserve.batching.batcher import PRIORITIES, Priority
from embedserve.server.config.settings import Settings
from embedserve.server.http.errors import ApiError
from embedserve.server.serving.seam import Call

_CURRENT: ContextVar[Call | None] = ContextVar("embedserve_call", default=None)

DEADLINE_HEADER = b"x-request-timeout"
PRIORITY_HEADER = b"x-priority"


def begin() -> tuple[Call, Token[Call | None]]:
    """A new request's call, current until `end`."""
    call = Call()
    return call, _CURRENT.set(call)


def end(token: Token[Call | None]) -> None:
    """The request is over: what it held is let go (`Call.releases`)."""
    call = _CURRENT.get()
    _CURRENT.reset(token)
    if call is not None:
        for release in call.releases:
            release()
        call.releases.clear()


def current() -> Call:
    """The request's call; a new one where no middleware began one (an endpoint called by itself)."""
    call = _CURRENT.get()
    if call is None:
        call = Call()
        _CURRENT.set(call)
    return call


def deadline(headers: Iterable[tuple[bytes, bytes]], settings: Settings) -> float:
    """The request's deadline in seconds: `X-Request-Timeout`, capped at the server's maximum, or the
    server's default. A value that is not a positive number is a 400."""
    asked = next((value for name, value in headers if name == DEADLINE_HEADER), None)
    if asked is None:
        return settings.request_timeout
    try:
        seconds = float(asked.decode("latin-1"))
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise ApiError(400, "X-Request-Timeout must be a positive number of seconds", param="X-Request-Timeout")
    return min(seconds, settings.max_request_timeout)


def priority(headers: Iterable[tuple[bytes, bytes]]) -> Priority:
    """The request's priority class (batching.batcher): `X-Priority: bulk` for ingestion, which runs only on the
    capacity queries leave; interactive by default. Another value is a 400."""
    asked = next((value for name, value in headers if name == PRIORITY_HEADER), None)
    if asked is None:
        return "interactive"
    value = asked.decode("latin-1").strip().lower()
    if value not in PRIORITIES:
        raise ApiError(400, f"X-Priority must be one of {', '.join(PRIORITIES)}", param="X-Priority")
    return value  # type: ignore[return-value]
