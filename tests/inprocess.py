"""The app in-process: `create_app` behind `httpx.ASGITransport`, for tests of the HTTP contract.

`start_app(tmp, *flags, env=...)` takes what `start_server` takes (serve's flags and EMBEDSERVE_
variables, read through the CLI's own parser), so a test says what it configures, not how it runs.
The app, its lifespan, batchers and model loading live on an event loop in a thread of their own,
as they do under uvicorn; `http` is a sync httpx client and `async_http()` an async one that hand
each request to `ASGITransport` on that loop. Sync client libraries (openai, httpx) take `http`.

Where a test needs a socket (slow bodies, raw bytes, a client that drops its connection, tools that
speak only HTTP), `listen()` serves the same app with uvicorn on a loopback port, on the same loop.
Signals, start-up and exit codes need a process of their own (`tests.support.start_server`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from embedserve.server.app import create_app
from embedserve.server.cli import parse_serve, settings_from, uvicorn_config
from embedserve.server.telemetry.logs import JsonFormatter
from tests.support import free_port

URL = "http://embedserve.test"
LOGGERS = ("embedserve", "uvicorn.error")  # the app's own, and uvicorn's "Exception in ASGI application"


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """EMBEDSERVE_ variables as a process started with them would see them, while the app reads them."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _Call:
    """One request through ASGITransport, run on the app's loop; the response read whole there."""

    def __init__(self, transport: httpx.ASGITransport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop

    async def _on_app_loop(self, method: str, url: httpx.URL, headers: httpx.Headers, body: bytes):  # type: ignore[no-untyped-def]
        request = httpx.Request(method, url, headers=headers, content=body)
        response = await self._transport.handle_async_request(request)
        return response.status_code, response.headers.raw, await response.aread()

    def submit(self, request: httpx.Request, body: bytes) -> concurrent.futures.Future:
        coroutine = self._on_app_loop(request.method, request.url, request.headers, body)
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)


def _response(request: httpx.Request, answer: tuple[int, list[tuple[bytes, bytes]], bytes]) -> httpx.Response:
    status, headers, content = answer
    return httpx.Response(status, headers=headers, content=content, request=request)


class SyncAppTransport(httpx.BaseTransport):
    def __init__(self, call: _Call) -> None:
        self._call = call

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        future = self._call.submit(request, request.read())
        timeout = (request.extensions.get("timeout") or {}).get("read")
        try:
            return _response(request, future.result(timeout))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise httpx.ReadTimeout(f"no answer in {timeout} s", request=request) from None


class AsyncAppTransport(httpx.AsyncBaseTransport):
    def __init__(self, call: _Call) -> None:
        self._call = call

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        future = self._call.submit(request, await request.aread())
        try:
            return _response(request, await asyncio.wrap_future(future))
        except asyncio.CancelledError:
            future.cancel()
            raise


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class AppServer:
    """A running app: `url`, `http`, `async_http()`, `listen()`, `log()`, `app`; `stop()` runs its shutdown."""

    url = URL

    def __init__(self, app: Any) -> None:
        self.app = app
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="app-loop", daemon=True)
        self._logs = _LogCapture()
        self._call = _Call(httpx.ASGITransport(app=app), self._loop)
        self.http = httpx.Client(transport=SyncAppTransport(self._call), base_url=URL, timeout=120)
        self._socket_url: str | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._uvicorn_done: concurrent.futures.Future | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        try:
            async with self.app.router.lifespan_context(self.app):
                self._started.set()
                await self._stopping.wait()
        except BaseException as exc:  # start-up or shutdown failed: the test that started it says so
            self._error = exc
            self._started.set()

    def start(self, timeout: float, *, ready: bool = True) -> None:
        for name in LOGGERS:
            logging.getLogger(name).addHandler(self._logs)
        logging.getLogger("embedserve").setLevel(logging.INFO)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"the app did not start: {error!r}") from error
        if ready:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 300) -> None:
        """Polls /health/ready until 200; a failed model or the timeout stops the app and raises."""
        deadline = time.monotonic() + timeout
        while (ready := self.http.get("/health/ready")).status_code != 200:
            if time.monotonic() > deadline or "failed" in ready.json().get("models", {}).values():
                self.stop()
                raise RuntimeError(f"app not ready in {timeout} s: {ready.text}\n{self.log()}")
            time.sleep(0.05)

    def listen(self) -> str:
        """Also serves the app over HTTP on a free loopback port (uvicorn on the app's loop); its URL."""
        if self._socket_url is None:
            port = free_port()
            config = uvicorn_config(self.app, self.app.state.settings, port)  # the server's own protocol
            config.host, config.lifespan = "127.0.0.1", "off"  # the lifespan already runs
            self._uvicorn = uvicorn.Server(config)
            self._uvicorn_done = asyncio.run_coroutine_threadsafe(self._uvicorn.serve(), self._loop)
            deadline = time.monotonic() + 60
            while not self._uvicorn.started:
                if self._uvicorn_done.done() or time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn did not start: {self._uvicorn_done.exception()!r}")
                time.sleep(0.01)
            self._socket_url = f"http://127.0.0.1:{port}"
        return self._socket_url

    def shut_connections(self) -> None:
        """Calls every socket connection's shutdown, as uvicorn's does on SIGTERM (listen() first)."""
        assert self._uvicorn is not None, "not listening"

        def shut() -> None:
            for connection in list(self._uvicorn.server_state.connections):
                connection.shutdown()

        self._loop.call_soon_threadsafe(shut)

    def async_http(self, **options: Any) -> httpx.AsyncClient:
        """An async client for the test's own event loop (its requests run on the app's)."""
        options.pop("limits", None)  # no connections to limit
        options.setdefault("timeout", 120)
        return httpx.AsyncClient(transport=AsyncAppTransport(self._call), base_url=URL, **options)

    def log(self) -> str:
        """What the app (and uvicorn, once listening) logged, as JSON lines like a real server's."""
        return "\n".join(self._logs.lines)

    def stop(self) -> None:
        """Runs the app's shutdown (its batchers drain) and ends its loop."""
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            self._uvicorn_done.result(timeout=60)
        if self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=120)
        self.http.close()
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(self._logs)
        if not self._loop.is_closed() and not self._thread.is_alive():
            self._loop.close()
        if self._error is not None:
            raise RuntimeError(f"the app failed: {self._error!r}") from self._error


def start_app(
    tmp_dir: Path | None = None,
    *flags: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    ready: bool = True,
) -> AppServer:
    """`create_app` as `embedserve serve FLAGS` with `env` would build it, started and (unless
    `ready=False`) ready."""
    del tmp_dir  # the signature of start_server: nothing to put there in-process
    with environment({"EMBEDSERVE_ACCESS_LOG": "false", **(env or {})}):
        app = create_app(settings_from(parse_serve(flags)))
        server = AppServer(app)
        server.start(timeout, ready=ready)
    return server
