"""One server, several models from a YAML models file: routing, prompts, dimensions, listing."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.fixtures.tiny_models import GEMMA3, XLMR
from tests.inprocess import AppServer, start_app
from tests.support import cosine_rows


@pytest.fixture(scope="module")
def models_file(tmp_path_factory: pytest.TempPathFactory, tiny_model_dirs, minilm_dir: str) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("config") / "models.yaml"
    entries = [
        {"id": "gemma", "source": str(tiny_model_dirs.gemma3), "aliases": ["google/embeddinggemma-300m"]},
        {
            "id": "bge-m3-tiny",
            "source": str(tiny_model_dirs.xlmr),
            "max_length": 128,
            "batching": {"max_batch_tokens": 2048, "max_wait_ms": 1, "workers": 1},
        },
        {"id": "e5-tiny", "source": str(tiny_model_dirs.bert), "default_prompt": "query", "threads": 2},
        {"id": "minilm", "source": minilm_dir, "threads": 2, "backend": "torch"},
    ]
    path.write_text(yaml.safe_dump({"models": entries}))
    return path


@pytest.fixture(scope="module")
def multi_server(tmp_path_factory: pytest.TempPathFactory, models_file: Path) -> Iterator[AppServer]:
    running = start_app(tmp_path_factory.mktemp("multi"), "--models", str(models_file))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def references(tiny_model_dirs, reference_model):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    bge = SentenceTransformer(str(tiny_model_dirs.xlmr), device="cpu")
    bge.max_seq_length = 128  # as its models-file entry says
    return {
        "gemma": SentenceTransformer(str(tiny_model_dirs.gemma3), device="cpu"),
        "bge-m3-tiny": bge,
        "e5-tiny": SentenceTransformer(str(tiny_model_dirs.bert), device="cpu"),
        "minilm": reference_model,
    }


def post(server: AppServer, route: str, body: dict) -> httpx.Response:
    return server.http.post(f"{server.url}{route}", json=body, timeout=60)


def vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]])


def test_models_are_listed_with_their_properties(multi_server: AppServer) -> None:
    cards = {card["id"]: card for card in multi_server.http.get(f"{multi_server.url}/v1/models").json()["data"]}
    assert set(cards) == {"gemma", "bge-m3-tiny", "e5-tiny", "minilm"}
    assert cards["gemma"]["dimension"] == GEMMA3.dimension and "query" in cards["gemma"]["prompts"]
    assert cards["gemma"]["aliases"] == ["google/embeddinggemma-300m"]
    assert cards["bge-m3-tiny"]["max_length"] == 128 and cards["bge-m3-tiny"]["dimension"] == XLMR.dimension
    assert cards["e5-tiny"]["default_prompt"] == "query"
    assert all(card["status"] == "loaded" and card["dtype"] == "float32" for card in cards.values())


def test_a_request_without_a_model_is_refused_when_several_are_served(multi_server: AppServer) -> None:
    response = post(multi_server, "/v1/embeddings", {"input": "which model?"})
    assert response.status_code == 400
    assert "gemma" in response.json()["error"]["message"]


def test_prompts_per_request_on_both_route_families(multi_server: AppServer, references) -> None:  # type: ignore[no-untyped-def]
    texts = ["where is the library?", "Студенты находят ответ."]
    gemma = references["gemma"]
    query = vectors(post(multi_server, "/v1/embeddings", {"model": "gemma", "input": texts, "prompt_name": "query"}))
    assert cosine_rows(query, gemma.encode(texts, prompt_name="query")).min() >= 0.9999
    native = post(multi_server, "/batch-embed", {"model": "gemma", "texts": texts, "task": "document"}).json()
    assert cosine_rows(np.array(native["embeddings"]), gemma.encode(texts, prompt_name="document")).min() >= 0.9999
    plain = vectors(post(multi_server, "/v1/embeddings", {"model": "google/embeddinggemma-300m", "input": texts}))
    assert cosine_rows(plain, gemma.encode(texts)).min() >= 0.9999

    unknown = post(multi_server, "/embed", {"model": "gemma", "text": "x", "prompt_name": "nope"})
    assert unknown.status_code == 400 and "query" in unknown.json()["error"]


def test_default_prompt_from_the_models_file(multi_server: AppServer, references) -> None:  # type: ignore[no-untyped-def]
    got = vectors(post(multi_server, "/v1/embeddings", {"model": "e5-tiny", "input": ["hello there"]}))
    expected = references["e5-tiny"].encode(["hello there"], prompt_name="query")
    assert cosine_rows(got, expected).min() >= 0.9999


def test_matryoshka_dimensions_on_gemma(multi_server: AppServer, references) -> None:  # type: ignore[no-untyped-def]
    text = ["a sentence to shorten"]
    for size in GEMMA3.matryoshka_dims:
        got = vectors(post(multi_server, "/v1/embeddings", {"model": "gemma", "input": text, "dimensions": size}))
        full = references["gemma"].encode(text)[:, :size]
        assert got.shape == (1, size) and cosine_rows(got, full).min() >= 0.9999
    too_big = post(
        multi_server, "/v1/embeddings", {"model": "gemma", "input": text, "dimensions": GEMMA3.dimension + 1}
    )
    assert too_big.status_code == 400


def test_the_models_file_max_length_truncates(multi_server: AppServer) -> None:
    long_text = "word " * 1000
    usage = post(multi_server, "/v1/embeddings", {"model": "bge-m3-tiny", "input": long_text}).json()["usage"]
    assert usage["prompt_tokens"] == 128


async def test_concurrent_requests_to_several_models_each_answered_by_the_model_named(
    multi_server: AppServer,
    references,  # type: ignore[no-untyped-def]
) -> None:
    rng = random.Random(3)
    words = "river city model token passage query answer library student".split()
    jobs = [
        (rng.choice(sorted(references)), [" ".join(rng.choices(words, k=rng.randint(2, 40))) for _ in range(3)])
        for _ in range(80)
    ]
    async with multi_server.async_http(timeout=120) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"model": model, "input": texts}) for model, texts in jobs)
        )
    for (model, texts), response in zip(jobs, responses, strict=True):
        assert response.json()["model"] == model
        prompt = {"prompt_name": "query"} if model == "e5-tiny" else {}
        expected = references[model].encode(texts, **prompt)
        assert cosine_rows(vectors(response), expected).min() >= 0.9999, model


def test_each_model_runs_its_runners_batches_at_once_on_cpu_unless_its_entry_says(multi_server: AppServer) -> None:
    host = multi_server.app.state.host
    workers = {model: host.get(model, "embed").batcher.config.workers for model in ("minilm", "bge-m3-tiny")}
    assert workers == {"minilm": 2, "bge-m3-tiny": 1}  # torch's two on its 2 threads; the entry's own 1
    assert host.get("e5-tiny", "embed").batcher.config.workers == 2  # backend auto: ONNX fp32, two on its 2 threads
