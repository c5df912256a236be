"""embedserve as a gateway: models named in requests are relayed to upstream servers and answered in our
routes' shapes. The upstream is a second, real embedserve (in-process, listening on loopback; OpenAI and TEI
shapes); Ollama and a generation server are stand-ins that answer the documented shapes (standins.py)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import yaml

from tests.inprocess import AppServer, start_app
from tests.server.upstream.standins import CHUNKS, Observed, generation_app, ollama_app, serve_in_thread
from tests.support import cosine_rows, free_port

TEXTS = ["How do embeddings work?", "Библиотека открыта до восьми.", "짧은 문장", "a longer passage " * 30]
QUERY = "Where do students find answers?"
DOCUMENTS = ["The library is open late.", "Bananas are yellow.", "Students ask librarians for help."]


@pytest.fixture(scope="module")
def upstream(
    tmp_path_factory: pytest.TempPathFactory, minilm_dir: str, tiny_bert_reranker_dir: Path
) -> Iterator[AppServer]:
    """The upstream: an embedserve of its own with an embedder and a reranker."""
    folder = tmp_path_factory.mktemp("upstream")
    running = start_app(folder, "--model", f"minilm={minilm_dir}", "--model", f"reranker={tiny_bert_reranker_dir}")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def ollama() -> Iterator[tuple[str, Observed]]:
    observed = Observed()
    with serve_in_thread(ollama_app(observed, delay=0.3)) as url:
        yield url, observed


@pytest.fixture(scope="module")
def generator() -> Iterator[tuple[str, Observed]]:
    observed = Observed()
    with serve_in_thread(generation_app(observed)) as url:
        yield url, observed


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: AppServer,
    ollama: tuple[str, Observed],
    generator: tuple[str, Observed],
) -> Iterator[AppServer]:
    folder = tmp_path_factory.mktemp("gateway")
    checks = {"health_check": {"interval": 1}}
    entries = [
        {"id": "remote-openai", "kind": "upstream", "protocol": "openai", "endpoints": [upstream.listen()],
         "upstream_model": "minilm", "aliases": ["ro"], **checks},
        {"id": "remote-tei", "kind": "upstream", "protocol": "tei", "endpoints": [upstream.listen()], **checks},
        {"id": "rerank-openai", "kind": "upstream", "protocol": "openai", "serves": ["rerank"],
         "endpoints": [upstream.listen()], "upstream_model": "reranker", **checks},
        {"id": "rerank-tei", "kind": "upstream", "protocol": "tei", "serves": ["rerank"], "endpoints": [upstream.listen()]},
        {"id": "dead", "kind": "upstream", "protocol": "openai", "retries": 1,
         "endpoints": [f"http://127.0.0.1:{free_port()}"], "health_check": {"interval": 0}},
        {"id": "ollama-nomic", "kind": "upstream", "protocol": "ollama", "endpoints": [ollama[0]],
         "upstream_model": "nomic-embed-text"},
        {"id": "llm", "kind": "upstream", "protocol": "openai", "serves": ["chat", "completions", "images"],
         "endpoints": [generator[0]], "upstream_model": "stand-in-llm"},
    ]  # fmt: skip
    models_file = folder / "models.yaml"
    models_file.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    running = start_app(folder, "--models", str(models_file))
    yield running
    running.stop()


def post(server: AppServer, path: str, body: dict) -> httpx.Response:
    return server.http.post(path, json=body, timeout=60)


def vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([item["embedding"] for item in response.json()["data"]])


# -- embeddings ------------------------------------------------------------------------------


def test_an_openai_upstream_answers_as_if_asked_directly(upstream: AppServer, gateway: AppServer) -> None:
    direct = post(upstream, "/v1/embeddings", {"model": "minilm", "input": TEXTS})
    relayed = post(gateway, "/v1/embeddings", {"model": "remote-openai", "input": TEXTS})
    assert cosine_rows(vectors(direct), vectors(relayed)).min() > 0.99999
    assert relayed.json()["model"] == "remote-openai"
    assert relayed.json()["usage"] == direct.json()["usage"]  # the upstream's own token count
    by_alias = post(gateway, "/v1/embeddings", {"model": "ro", "input": "one text"})
    assert by_alias.status_code == 200 and len(by_alias.json()["data"]) == 1


def test_a_tei_upstream_is_translated_to_every_embedding_route(upstream: AppServer, gateway: AppServer) -> None:
    direct = vectors(post(upstream, "/v1/embeddings", {"model": "minilm", "input": TEXTS}))
    openai_shape = vectors(post(gateway, "/v1/embeddings", {"model": "remote-tei", "input": TEXTS}))
    native = post(gateway, "/batch-embed", {"model": "remote-tei", "texts": TEXTS}).json()
    one = post(gateway, "/embed", {"model": "remote-tei", "text": TEXTS[0]}).json()
    tei_shape = post(gateway, "/embed", {"model": "remote-tei", "inputs": TEXTS}).json()
    for got in (openai_shape, np.array(native["embeddings"]), np.array(tei_shape)):
        assert cosine_rows(direct, got).min() > 0.99999
    assert one["dim"] == 384 and one["model"] == "remote-tei" and native["count"] == len(TEXTS)
    assert native["tokens"] > 0  # TEI reports no usage: estimated


def test_dimensions_and_base64_are_honoured_through_the_gateway(gateway: AppServer) -> None:
    for model in ("remote-openai", "remote-tei", "ollama-nomic"):
        floats = vectors(post(gateway, "/v1/embeddings", {"model": model, "input": TEXTS[:2], "dimensions": 8}))
        assert floats.shape == (2, 8)
        assert np.linalg.norm(floats, axis=1) == pytest.approx(1.0, abs=1e-5)
        packed = post(gateway, "/v1/embeddings", {"model": model, "input": TEXTS[:2], "encoding_format": "base64"})
        decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in packed.json()["data"]])
        plain = vectors(post(gateway, "/v1/embeddings", {"model": model, "input": TEXTS[:2]}))
        np.testing.assert_allclose(decoded, plain, atol=1e-6)


def test_ollama_answers_are_translated_with_its_token_count(gateway: AppServer, ollama: tuple[str, Observed]) -> None:
    _, observed = ollama
    answer = post(gateway, "/v1/embeddings", {"model": "ollama-nomic", "input": ["one two three", "four"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["prompt_tokens"] == 4  # Ollama's prompt_eval_count
    assert observed.bodies[-1] == {"model": "nomic-embed-text", "input": ["one two three", "four"], "truncate": True}


async def test_requests_to_one_upstream_are_not_serialized(gateway: AppServer, ollama: tuple[str, Observed]) -> None:
    _, observed = ollama
    observed.most_in_flight = 0
    async with gateway.async_http(timeout=30) as client:
        answers = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"model": "ollama-nomic", "input": f"text {i}"}) for i in range(8))
        )
    assert all(a.status_code == 200 for a in answers)
    assert observed.most_in_flight >= 6  # each call sleeps 0.3 s upstream: one at a time would never overlap


# -- reranking -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["rerank-openai", "rerank-tei"])
def test_rerank_upstreams_score_as_the_upstream_does(upstream: AppServer, gateway: AppServer, model: str) -> None:
    direct = post(upstream, "/v1/rerank", {"model": "reranker", "query": QUERY, "documents": DOCUMENTS}).json()
    relayed = post(
        gateway, "/v1/rerank", {"model": model, "query": QUERY, "documents": DOCUMENTS, "return_documents": True}
    ).json()
    assert [r["index"] for r in relayed["results"]] == [r["index"] for r in direct["results"]]
    for mine, theirs in zip(relayed["results"], direct["results"]):
        assert mine["relevance_score"] == pytest.approx(theirs["relevance_score"], abs=1e-6)
        assert mine["document"]["text"] == DOCUMENTS[mine["index"]]
    top = post(gateway, "/v1/rerank", {"model": model, "query": QUERY, "documents": DOCUMENTS, "top_n": 1}).json()
    assert len(top["results"]) == 1 and top["results"][0]["index"] == direct["results"][0]["index"]
    tei = post(gateway, "/rerank", {"model": model, "query": QUERY, "texts": DOCUMENTS, "raw_scores": True})
    assert tei.status_code == 200 and [r["index"] for r in tei.json()] == [r["index"] for r in direct["results"]]


# -- failures --------------------------------------------------------------------------------


def test_an_unreachable_upstream_is_a_502_naming_it_in_each_routes_shape(gateway: AppServer) -> None:
    openai = post(gateway, "/v1/embeddings", {"model": "dead", "input": "x"})
    assert openai.status_code == 502
    error = openai.json()["error"]
    assert "dead" in error["message"] and "cannot reach" in error["message"] and error["code"] == "upstream_error"
    native = post(gateway, "/embed", {"model": "dead", "text": "x"})
    assert native.status_code == 502 and native.json()["error_type"] == "Upstream"


def test_the_upstreams_refusal_of_bad_input_keeps_its_status(gateway: AppServer) -> None:
    too_long = post(gateway, "/v1/embeddings", {"model": "remote-openai", "input": "word " * 2000, "truncate": False})
    assert too_long.status_code in (400, 413), too_long.text
    assert "remote-openai" in too_long.json()["error"]["message"]
    ids_to_tei = post(gateway, "/v1/embeddings", {"model": "remote-tei", "input": [101, 2023, 102]})
    assert ids_to_tei.status_code == 400 and "text only" in ids_to_tei.json()["error"]["message"]


def test_unknown_and_wrong_kind_names_are_404_listing_what_is_served(gateway: AppServer) -> None:
    unknown = post(gateway, "/v1/embeddings", {"model": "nope", "input": "x"})
    assert unknown.status_code == 404 and "remote-openai" in unknown.json()["error"]["message"]
    reranker_asked_to_embed = post(gateway, "/v1/embeddings", {"model": "rerank-tei", "input": "x"})
    assert reranker_asked_to_embed.status_code == 404
    no_name = post(gateway, "/v1/embeddings", {"input": "x"})
    assert no_name.status_code == 400  # several upstreams embed: the request must name one


def test_models_lists_upstreams_and_where_they_run(gateway: AppServer, upstream: AppServer) -> None:
    cards = {card["id"]: card for card in gateway.http.get("/v1/models").json()["data"]}
    assert set(cards) == {"remote-openai", "remote-tei", "rerank-openai", "rerank-tei", "dead", "ollama-nomic", "llm"}
    card = cards["remote-openai"]
    assert card["location"] == "upstream" and card["endpoints"] == [upstream.listen()] and card["protocol"] == "openai"
    assert card["serves"] == ["embed"] and card["status"] == "ready"
    local = httpx.get(upstream.listen() + "/v1/models").json()["data"][0]
    assert local["location"] == "local"


def test_upstream_calls_are_measured(gateway: AppServer, upstream: AppServer) -> None:
    post(gateway, "/v1/embeddings", {"model": "remote-openai", "input": "x"})
    text = gateway.http.get("/metrics").text
    assert f'embed_upstream_calls_total{{endpoint="{upstream.listen()}",model="remote-openai",outcome="ok"}}' in text
    assert f'embed_upstream_endpoint_healthy{{endpoint="{upstream.listen()}",model="remote-openai"}} 1.0' in text
    assert 'embed_requests_total{model="remote-openai",route="/v1/embeddings",status="200"}' in text


# -- generation passthrough ------------------------------------------------------------------


def test_a_streamed_chat_completion_arrives_chunk_by_chunk(gateway: AppServer, generator: tuple[str, Observed]) -> None:
    body = {"model": "llm", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    arrivals: list[tuple[float, dict]] = []
    with httpx.stream("POST", gateway.listen() + "/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append((time.time(), orjson.loads(line[6:])))
    assert [chunk["choices"][0]["delta"]["content"] for _, chunk in arrivals] == [f"part{i} " for i in range(CHUNKS)]
    # Relayed as sent: the first chunk reached the client before the upstream had sent the last one
    # (a buffered relay could deliver nothing before the end).
    assert arrivals[0][0] < arrivals[-1][1]["sent_at"]
    assert generator[1].bodies[-1]["model"] == "stand-in-llm"  # the upstream's own name, all else unchanged
    assert generator[1].bodies[-1]["messages"] == body["messages"]


def test_generation_answers_pass_through_unchanged(gateway: AppServer) -> None:
    chat = post(gateway, "/v1/chat/completions", {"model": "llm", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == "hello"
    assert post(gateway, "/v1/completions", {"model": "llm", "prompt": "x"}).json()["choices"] == [{"text": "ok"}]
    image = post(gateway, "/v1/images/generations", {"model": "llm", "prompt": "a cat"})
    assert image.json()["data"][0]["b64_json"] == "iVBORw0KGgo="
    not_generative = post(gateway, "/v1/chat/completions", {"model": "remote-openai", "messages": []})
    assert not_generative.status_code == 404 and "llm" in not_generative.json()["error"]["message"]
    no_model = post(gateway, "/v1/chat/completions", {"messages": []})
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"


def test_a_client_leaving_mid_stream_frees_the_upstream_call(
    gateway: AppServer, generator: tuple[str, Observed]
) -> None:
    body = {"model": "llm", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    streams_before = len(generator[1].streamed)
    with httpx.stream("POST", gateway.listen() + "/v1/chat/completions", json=body, timeout=30) as response:
        next(response.iter_lines())  # the first event, then leave
    outstanding = f'embed_upstream_outstanding{{endpoint="{generator[0]}",model="llm"}} '
    deadline = time.monotonic() + 60  # only turns a hang into a failure
    while len(generator[1].streamed) == streams_before or outstanding + "0.0" not in gateway.http.get("/metrics").text:
        assert time.monotonic() < deadline, "the relayed call stayed open"
        time.sleep(0.05)
    # The upstream's stream was cut short: the gateway closed its call when the client left.
    assert generator[1].streamed[-1] < CHUNKS + 1


def test_upstream_models_sit_behind_the_same_auth_and_limits(tmp_path: Path, ollama: tuple[str, Observed]) -> None:
    entry = {"id": "nomic", "kind": "upstream", "protocol": "ollama", "endpoints": [ollama[0]]}
    models_file = tmp_path / "models.yaml"
    models_file.write_text(yaml.safe_dump({"models": [entry]}))
    env = {"EMBEDSERVE_API_KEYS": "caller-key", "EMBEDSERVE_RATE_LIMIT_TOKENS_PER_MINUTE": "60"}
    running = start_app(tmp_path, "--models", str(models_file), env=env)
    try:
        url, key = "/v1/embeddings", {"Authorization": "Bearer caller-key"}
        assert running.http.post(url, json={"model": "nomic", "input": "x"}).status_code == 401
        too_big = running.http.post(url, json={"model": "nomic", "input": "y" * 400}, headers=key)  # ~101 tokens
        assert too_big.status_code == 413 and "tokens per minute" in too_big.json()["error"]["message"]
        statuses = [
            running.http.post(url, json={"model": "nomic", "input": "z" * 40}, headers=key).status_code
            for _ in range(8)
        ]
        assert statuses[:5] == [200] * 5 and statuses[-1] == 429  # ~11 tokens each against 60 a minute
    finally:
        running.stop()
