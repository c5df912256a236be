"""OpenTelemetry traces of requests, exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the standard OTEL_ variables (service name, batch delays,
headers) apply. Unset, nothing is created: every helper here is a test of one module global.

A request's trace: the server span (`POST /v1/embeddings`, a child of the caller's `traceparent`) with
`tokenize`, `queue` (until its first batch starts) and one `forward` per batch its items ran in (batch
size and tokens as attributes); calls to upstream servers are client spans whose `traceparent` goes out
with the call.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from embedserve.batching.batcher import Timeline
from embedserve.server.config.errors import ConfigError

_tracer: Any = None
_provider: Any = None


def configure(service_version: str) -> bool:
    """Sets up (or turns off) tracing from the environment; whether it is on."""
    global _tracer, _provider
    shutdown()
    if not (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry's OTLP exporter is not installed: "
            "pip install 'embedserve[tracing]'"
        ) from None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "embedserve")})
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = _provider.get_tracer("embedserve", service_version)
    return True


def enabled() -> bool:
    return _tracer is not None


def shutdown() -> None:
    """Exports what is pending and stops."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


@contextmanager
def server_span(method: str, route: str, headers: Iterable[tuple[bytes, bytes]]) -> Iterator[Any]:
    """The request's span, continuing the caller's trace (W3C traceparent); None when off."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers if name in _PROPAGATED}
    with _tracer.start_as_current_span(f"{method} {route}", context=extract(carrier), kind=SpanKind.SERVER) as span:
        span.set_attribute("http.request.method", method)
        span.set_attribute("http.route", route)
        yield span


_PROPAGATED = (b"traceparent", b"tracestate")


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A child of the current span."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, attributes=attributes):
        yield


@contextmanager
def client_span(name: str, url: str) -> Iterator[dict[str, str]]:
    """A call to another server: the headers that carry the trace to it."""
    if _tracer is None:
        yield {}
        return
    from opentelemetry.propagate import inject
    from opentelemetry.trace import SpanKind

    with _tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes={"url.full": url}):
        carrier: dict[str, str] = {}
        inject(carrier)
        yield carrier


def timeline() -> Timeline | None:
    """Something for the batcher to note a request's queueing and batches in, when tracing."""
    return Timeline() if _tracer is not None else None


def record(timeline: Timeline | None, model: str) -> None:
    """The queue wait and each batch of a request, as children of the current span, after the fact."""
    if _tracer is None or timeline is None or timeline.started is None:
        return
    loop_now, wall_now = asyncio.get_running_loop().time(), time.time_ns()

    def wall(t: float) -> int:  # the batcher's monotonic seconds as epoch nanoseconds
        return wall_now - int((loop_now - t) * 1e9)

    _tracer.start_span("queue", start_time=wall(timeline.queued), attributes={"embedserve.model": model}).end(
        end_time=wall(timeline.started)
    )
    for batch in timeline.batches:
        attributes = {"embedserve.model": model, "batch.size": batch.size, "batch.tokens": batch.tokens}
        forward = _tracer.start_span("forward", start_time=wall(batch.started), attributes=attributes)
        forward.end(end_time=wall(batch.finished))
