"""Traces: with OTEL_EXPORTER_OTLP_ENDPOINT set, each request's span tree reaches an OTLP receiver (a real
HTTP endpoint started here, decoding the exporter's protobuf), continuing the caller's traceparent and
passing it on to upstream servers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from embedserve.server.telemetry import tracing
from tests.inprocess import AppServer, start_app
from tests.server.upstream.standins import serve_in_thread

pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP trace endpoint: POST /v1/traces, protobuf bodies, spans kept as dicts."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self._lock = threading.Lock()

    def app(self) -> Starlette:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        async def traces(request: Request) -> Response:
            message = ExportTraceServiceRequest()
            message.ParseFromString(await request.body())
            with self._lock:
                for resource in message.resource_spans:
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            self.spans.append(
                                {
                                    "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex(),
                                    "attributes": {a.key: _value(a.value) for a in span.attributes},
                                    "start": span.start_time_unix_nano,
                                    "end": span.end_time_unix_nano,
                                }
                            )
            return Response(b"", media_type="application/x-protobuf")

        return Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])

    def wait_for(self, name: str, trace_id: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout  # only turns a hang into a failure
        while time.monotonic() < deadline:
            with self._lock:
                found = [s for s in self.spans if s["name"] == name and s["trace_id"] == trace_id]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no {name!r} span of trace {trace_id} arrived; got {[s['name'] for s in self.spans]}")

    def children(self, parent: dict) -> list[dict]:
        with self._lock:
            return [s for s in self.spans if s["parent"] == parent["span_id"]]


def _value(value):  # type: ignore[no-untyped-def]
    return getattr(value, value.WhichOneof("value"))


def openai_standin(seen: list[dict]) -> Starlette:
    async def embeddings(request: Request) -> Response:
        seen.append(dict(request.headers))
        body = await request.json()
        return JSONResponse(
            {"object": "list", "model": body["model"], "data": [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}],
             "usage": {"prompt_tokens": 2, "total_tokens": 2}}
        )  # fmt: skip

    return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppServer, Receiver, list[dict]]]:
    receiver, seen = Receiver(), []
    with serve_in_thread(receiver.app()) as collector, serve_in_thread(openai_standin(seen)) as upstream:
        models = tmp_path_factory.mktemp("traced") / "models.yaml"
        entries = [
            {"id": "all-MiniLM-L6-v2", "source": "sentence-transformers/all-MiniLM-L6-v2"},
            {"id": "remote", "kind": "upstream", "protocol": "openai", "endpoints": [upstream]},
        ]
        models.write_text(yaml.safe_dump({"models": entries}))
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_SERVICE_NAME": "embedserve-test",
        }
        running = start_app(None, "--models", str(models), env=env)
        try:
            yield running, receiver, seen
        finally:
            running.stop()
    assert not tracing.enabled()  # stopping the app turned it off


def test_a_request_is_one_span_tree_under_the_callers_trace(traced) -> None:  # type: ignore[no-untyped-def]
    server, receiver, _ = traced
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    answer = server.http.post(
        "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": ["one", "two"]}, headers=headers
    )
    assert answer.status_code == 200
    root = receiver.wait_for("POST /v1/embeddings", TRACE_ID)
    assert root["parent"] == PARENT_ID
    assert root["attributes"]["http.response.status_code"] == 200
    assert root["attributes"]["embedserve.model"] == "all-MiniLM-L6-v2"
    receiver.wait_for("forward", TRACE_ID)
    children = {span["name"]: span for span in receiver.children(root)}
    assert {"tokenize", "queue", "forward"} <= set(children), sorted(children)
    forward = children["forward"]
    assert forward["attributes"]["batch.size"] >= 2 and forward["attributes"]["batch.tokens"] >= 6
    assert children["queue"]["end"] <= forward["start"] + 1_000_000  # the wait ends as its batch starts
    assert root["start"] <= children["tokenize"]["start"] and forward["end"] <= root["end"]


def test_an_upstream_call_is_a_client_span_whose_traceparent_goes_with_it(traced) -> None:  # type: ignore[no-untyped-def]
    server, receiver, seen = traced
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    headers = {"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
    assert (
        server.http.post("/v1/embeddings", json={"model": "remote", "input": "x"}, headers=headers).status_code == 200
    )
    root = receiver.wait_for("POST /v1/embeddings", trace_id)
    client = receiver.wait_for("upstream openai", trace_id)
    assert client["parent"] == root["span_id"]
    assert seen[-1]["traceparent"] == f"00-{trace_id}-{client['span_id']}-01"
