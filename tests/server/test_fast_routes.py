"""The inference routes' fast path (server/http/fast_routes.py): a well-formed body is served without FastAPI's
route machinery, by the same endpoint; anything else is handed to the FastAPI route, and answered
exactly as FastAPI alone answers it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from embedserve.server.app import create_app
from embedserve.server.cli import parse_serve, settings_from
from embedserve.server.http.fast_routes import HANDED_ON, FastRoute, install_fast_routes
from tests.inprocess import AppServer

NAMES = '{"dimension": 16}'
# Every route that queues model work: each is refused at the door when its models are saturated, and fast.
INFERENCE_PATHS = {
    "/v1/embeddings",
    "/embed",
    "/batch-embed",
    "/embed_sparse",
    "/v2/embed",
    "/v1/embed",
    "/similarity",
    "/embed_all",
    "/v1/multi-vector",
    "/",
    "/v1/rerank",
    "/v2/rerank",
    "/rerank",
    "/predict",
}


def hashing_app(folder: Path, *, fast: bool) -> AppServer:
    models = folder / "models.yaml"
    models.write_text(
        f"models:\n  - {{id: words, source: {folder}, backend: hashing}}\n"
        f"  - {{id: pairs, source: {folder}, backend: hashing, kind: rerank}}\n"
    )
    import tests.hashing_backend  # noqa: F401  # registers the backend

    app = create_app(settings_from(parse_serve(["--models", str(models), "--no-access-log"])))
    if not fast:  # FastAPI alone, as before the fast path
        app.router.routes[:] = [route for route in app.router.routes if not isinstance(route, FastRoute)]
    server = AppServer(app)
    server.start(60)
    return server


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppServer, AppServer]]:
    folder = tmp_path_factory.mktemp("fast-routes")
    (folder / "hashing.json").write_text(NAMES)
    fast, plain = hashing_app(folder, fast=True), hashing_app(folder, fast=False)
    yield fast, plain
    fast.stop()
    plain.stop()


def answer(server: AppServer, path: str, body: bytes, content_type: str | None = "application/json") -> tuple:
    headers = {"content-type": content_type} if content_type else {}
    response = server.http.post(path, content=body, headers=headers)
    parsed = response.json()
    if isinstance(parsed, dict):
        parsed.pop("id", None)  # a rerank answer's id is the request's own
    return response.status_code, response.headers.get("content-type"), parsed


def test_every_inference_route_has_a_fast_route_in_front_and_the_schema_still_documents_its_body(apps) -> None:
    fast, _ = apps
    fronted = {route.path for route in fast.app.router.routes if isinstance(route, FastRoute)}
    assert fronted == INFERENCE_PATHS
    assert set(fast.app.state.door.routes) == INFERENCE_PATHS  # one declaration gives both
    schema = fast.http.get("/openapi.json").json()
    body = schema["paths"]["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/EmbeddingsRequest"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", b'{"input": ["a fox", "a dog"], "model": "words"}'),
        ("/embed", b'{"text": "a fox"}'),
        ("/embed", b'{"inputs": ["a fox"], "truncate": true}'),
        ("/batch-embed", b'{"texts": ["a", "b c"], "embedding_type": "int8"}'),
        ("/v1/embed", b'{"texts": ["a fox"], "model": "words", "input_type": "search_query"}'),
        ("/v1/embed", b'{"texts": ["a fox"], "model": "words", "embedding_types": ["float", "ubinary"]}'),
        ("/v1/rerank", b'{"query": "fox", "documents": ["a fox", "a dog"], "model": "pairs"}'),
        ("/rerank", b'{"query": "fox", "texts": ["a fox", "a dog"], "model": "pairs"}'),
        ("/similarity", b'{"inputs": {"source_sentence": "fox", "sentences": ["a fox"]}, "model": "words"}'),
        ("/", b'{"inputs": ["a fox", "a dog"], "model": "words"}'),
        ("/", b'{"query": "fox", "texts": ["a fox", "a dog"], "model": "pairs"}'),
        ("/", b'{"inputs": {"source_sentence": "fox", "sentences": ["a fox"]}, "model": "words"}'),
    ],
)
def test_a_well_formed_body_gets_what_fastapi_gives(apps, path: str, body: bytes) -> None:
    fast, plain = apps
    got = answer(fast, path, body)
    assert got[0] == 200 and got == answer(plain, path, body)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/json"),  # no body
        (b'{"input": "a"', "application/json"),  # cut short
        (b"\xef\xbb\xbf" + b'{"input": "with a byte-order mark"}', "application/json"),
        (b'{"input": "a lone \\ud800 surrogate"}', "application/json"),
        (b'{"input": "\xff"}', "application/json"),  # not UTF-8
        (b"[" * 10_000, "application/json"),  # nested past any parser's depth
        (b'{"input": []}', "application/json"),  # valid JSON, invalid body
        (b'{"input": "a", "dimensions": 0}', "application/json"),
        (b'{"input": "a"}', "text/plain"),  # not JSON by its type
        (b'{"input": "a"}', None),  # no type: not JSON to FastAPI's strict default
        (b'{"input": "a"}', "application/vnd.custom+json"),
        (b'{"input": "a"}', "application/json; charset=utf-8"),
    ],
)
def test_anything_else_is_answered_exactly_as_fastapi_answers_it(apps, body: bytes, content_type: str | None) -> None:
    fast, plain = apps
    assert answer(fast, "/v1/embeddings", body, content_type) == answer(plain, "/v1/embeddings", body, content_type)


class Body(BaseModel):
    text: str


def recording_app(router: APIRouter) -> tuple[FastAPI, list[bool]]:
    """An app with fast routes for `router`, and for each request whether it was handed on to FastAPI."""
    app = FastAPI()
    app.include_router(router)
    install_fast_routes(app, [router], ["/echo"])
    handed_on: list[bool] = []

    async def recorded(scope, receive, send):  # type: ignore[no-untyped-def]
        await app(scope, receive, send)
        if scope["type"] == "http":
            handed_on.append(HANDED_ON in scope)

    return recorded, handed_on  # type: ignore[return-value]


async def test_the_fast_route_serves_a_good_body_itself_and_hands_on_a_bad_one() -> None:
    router = APIRouter()

    @router.post("/echo")
    async def echo(body: Body, request: Request) -> JSONResponse:
        return JSONResponse({"text": body.text.upper(), "path": request.url.path})

    app, handed_on = recording_app(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
        good = await client.post("/echo", json={"text": "hi"})
        bad = await client.post("/echo", json={"text": 3})
    assert handed_on == [False, True]
    assert good.json() == {"text": "HI", "path": "/echo"}
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "text"]


def test_an_endpoint_that_takes_more_than_its_body_and_request_or_returns_data_cannot_have_a_fast_route() -> None:
    router = APIRouter()

    @router.post("/echo")
    async def echo(body: Body, request: Request, shout: bool = Query(False)) -> JSONResponse:
        return JSONResponse({})

    @router.post("/serialized")
    async def serialized(body: Body, request: Request) -> dict:
        return {}

    with pytest.raises(TypeError, match="takes its body and the Request, nothing else"):
        install_fast_routes(FastAPI(), [router], ["/echo"])
    with pytest.raises(TypeError, match="returns a Response"):
        install_fast_routes(FastAPI(), [router], ["/serialized"])
