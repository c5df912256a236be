"""uvicorn's HTTP protocol (httptools) with what a server facing the open internet needs and uvicorn lacks:

- a deadline for request headers: a connection that opens and sends a partial head (or nothing) gets a
  408 and is closed after `header_timeout` seconds, so slow-loris clients cannot hold sockets for ever;
  the body has its own deadline in the middleware;
- a cap on open connections: past it a new connection gets a 503 and is closed at once, before the
  process runs out of file descriptors (which made every client's connection fail);
- a graceful stop that does not reset requests already on the wire: on shutdown an idle keep-alive
  connection is closed only after the loop had a chance to read what the client just sent, and a
  request that began is answered (with `Connection: close`);
- the overload door (`server/http/admission.py`): a request the app's `Door` refuses is answered as soon as
  its head is parsed, without an ASGI task, and its body is skipped as it arrives;
- one write per response where uvicorn makes two (`server/http/coalescing.py`).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from embedserve.server.http.admission import DOOR_PASSED
from embedserve.server.http.coalescing import CoalescingTransport
from embedserve.server.http.errors import ApiError, rendered
from embedserve.server.http.middleware import new_request_id

# How long an idle keep-alive connection being shut down waits for bytes already sent to it.
SHUTDOWN_READ_GRACE = 0.1


def raw_error(path: str, error: ApiError, *, close: bool) -> bytes:
    """An error answered by the protocol itself, before any ASGI app sees the request: the whole
    HTTP/1.1 response, in the route's error shape, with a request id like every other answer."""
    body, headers = rendered(path, error)
    headers.append((b"x-request-id", new_request_id().encode("latin-1")))
    if close:  # whatever the error said of the connection
        headers = [header for header in headers if header[0] != b"connection"] + [(b"connection", b"close")]
    head = f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n".encode("latin-1")
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return head + b"\r\n" + body


class _Refused:
    """The cycle of a request refused at the door: complete, so uvicorn skips its body."""

    response_complete = True
    keep_alive = True

    def __init__(self) -> None:
        self.message_event = asyncio.Event()


class GuardedHttpProtocol(HttpToolsProtocol):
    """Set `header_timeout`, `max_connections` and `door` on the class (see `protocol_class`)."""

    header_timeout: float = 10.0
    max_connections: int | None = None
    door: Any = None  # server.http.admission.Door, or None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_head = False  # bytes of a request arrived; its headers are not complete yet
        self._stopping = False

    # -- the connection cap, and the deadline for the first request's head ----------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            message = f"the server has {self.max_connections} connections open, its limit; retry shortly"
            self.transport.write(raw_error("/v1/", ApiError(503, message), close=True))
            self.transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        path = self.url.decode("latin-1").split("?")[0] if self._in_head and getattr(self, "url", None) else "/"
        message = f"the request headers did not arrive within {self.header_timeout:g} s"
        self.transport.write(raw_error(path, ApiError(408, message), close=True))
        self.transport.close()

    # -- parser callbacks: a head begins, a head completes ---------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._header_timer is None:  # a later request on a keep-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        if self.door is not None and self.parser.get_method() == b"POST" and self._refused_at_door():
            return
        super().on_headers_complete()
        if self._stopping and self.cycle is not None:
            self.cycle.keep_alive = False  # answered, then closed

    def _refused_at_door(self) -> bool:
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # pipelined behind a request still running: uvicorn queues it as usual
        path = httptools.parse_url(self.url).path.decode("latin-1")
        refusal = self.door.refusal("POST", path, self.headers)
        if refusal is None:
            self.scope[DOOR_PASSED] = True  # type: ignore[literal-required]  # AdmissionMiddleware need not ask again
            return False
        self.cycle = _Refused()  # type: ignore[assignment]
        keep_alive = not self._stopping and self.parser.should_keep_alive()
        self.transport.write(raw_error(path, refusal, close=not keep_alive))
        if keep_alive:
            self.on_response_complete()
        else:
            self.transport.close()
        return True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._stopping and not self.transport.is_closing() and not self.pipeline:
            self.transport.close()

    # -- shutdown ----------------------------------------------------------------------------------

    def shutdown(self) -> None:
        self._stopping = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        elif self._in_head:
            pass  # a request is arriving: it is answered, with Connection: close
        else:
            # Idle: bytes the client sent just now may still be in the socket; closing it unread would
            # reset the connection and lose them. Let the loop read first.
            self.loop.call_later(SHUTDOWN_READ_GRACE, self._close_if_idle)

    def _close_if_idle(self) -> None:
        busy = self._in_head or (self.cycle is not None and not self.cycle.response_complete)
        if not busy and not self.transport.is_closing():
            self.transport.close()


def protocol_class(header_timeout: float, max_connections: int | None, door: Any = None) -> type[GuardedHttpProtocol]:
    """The protocol with these limits (and the app's overload door), for uvicorn.Config(http=...)."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {"header_timeout": header_timeout, "max_connections": max_connections, "door": door},
    )
