"""An LLM reranker (Qwen3-Reranker in miniature) on every rerank route: Cohere/Jina's /v1/rerank, Cohere v2's
/v2/rerank (and the cohere client), TEI's /rerank and `POST /`; the instruction is the request's to choose."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.fixtures.model_cards import qwen3_reranker_scores
from tests.fixtures.tiny_models import SAMPLE_TEXTS
from tests.inprocess import AppServer, start_app

pytestmark = pytest.mark.filterwarnings("ignore:`max_length` is ignored")  # the card's own code warns

QUERY = "Where do students find answers?"
DOCUMENTS = [*SAMPLE_TEXTS.values(), "short", "a much longer document about libraries " * 12]
INSTRUCTION = "Given a question, find the sentence in Russian that answers it"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tiny_qwen3_reranker_dir: Path, tiny_bert_reranker_dir: Path
) -> Iterator[AppServer]:
    folder = tmp_path_factory.mktemp("llm-rerank")
    models_file = folder / "models.yaml"
    entries = [
        {"id": "qwen3-reranker", "source": str(tiny_qwen3_reranker_dir)},  # kind and backend read off the folder
        {"id": "named", "source": str(tiny_qwen3_reranker_dir), "kind": "rerank", "template": "qwen3-reranker"},
        {"id": "cross-encoder", "source": str(tiny_bert_reranker_dir)},
    ]
    models_file.write_text(yaml.safe_dump({"models": entries}))
    running = start_app(folder, "--models", str(models_file))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def card(tiny_qwen3_reranker_dir: Path) -> dict[str | None, np.ndarray]:
    return {
        instruction: qwen3_reranker_scores(tiny_qwen3_reranker_dir, QUERY, DOCUMENTS, instruction=instruction)
        for instruction in (None, INSTRUCTION)
    }


def post(server: AppServer, route: str, body: dict) -> httpx.Response:
    return server.http.post(f"{server.url}{route}", json=body, timeout=60)


@pytest.mark.parametrize("model", ["qwen3-reranker", "named"])
@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_v1_rerank_gives_the_model_cards_scores_best_first(
    served: AppServer, card: dict, model: str, instruction: str | None
) -> None:
    body = {"model": model, "query": QUERY, "documents": DOCUMENTS, "top_n": 3, "return_documents": True}
    if instruction is not None:
        body["instruction"] = instruction
    response = post(served, "/v1/rerank", body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    expected = card[instruction]
    best = list(np.argsort(-expected, kind="stable")[:3])
    assert [r["index"] for r in results] == best
    np.testing.assert_allclose([r["relevance_score"] for r in results], expected[best], atol=1e-5, rtol=0)
    assert [r["document"]["text"] for r in results] == [DOCUMENTS[i] for i in best]


def test_models_lists_the_llm_reranker_as_a_torch_reranker(served: AppServer) -> None:
    models = {m["id"]: m for m in served.http.get(f"{served.url}/v1/models").json()["data"]}
    assert models["qwen3-reranker"]["kind"] == "rerank"
    assert models["qwen3-reranker"]["backend"] == "torch"


def test_cohere_v2_rerank_takes_the_instruction(served: AppServer, card: dict) -> None:
    cohere = pytest.importorskip("cohere")
    client = cohere.ClientV2(api_key="unused", base_url=served.url, httpx_client=served.http)
    answer = client.rerank(model="qwen3-reranker", query=QUERY, documents=DOCUMENTS, top_n=2)
    expected = card[None]
    assert [r.index for r in answer.results] == list(np.argsort(-expected, kind="stable")[:2])
    raw = post(
        served,
        "/v2/rerank",
        {"model": "qwen3-reranker", "query": QUERY, "documents": DOCUMENTS, "instruction": INSTRUCTION},
    )
    assert raw.status_code == 200, raw.text
    scores = {r["index"]: r["relevance_score"] for r in raw.json()["results"]}
    np.testing.assert_allclose([scores[i] for i in range(len(DOCUMENTS))], card[INSTRUCTION], atol=1e-5, rtol=0)


def test_cohere_v1_client_reranks_with_it(served: AppServer, card: dict) -> None:
    cohere = pytest.importorskip("cohere")
    client = cohere.Client(api_key="unused", base_url=served.url, httpx_client=served.http, max_retries=0)
    answer = client.rerank(model="qwen3-reranker", query=QUERY, documents=DOCUMENTS, top_n=2)
    expected = card[None]
    best = list(np.argsort(-expected, kind="stable")[:2])
    assert [r.index for r in answer.results] == best
    np.testing.assert_allclose([r.relevance_score for r in answer.results], expected[best], atol=1e-5, rtol=0)


@pytest.mark.parametrize("route", ["/rerank", "/"])
def test_tei_rerank_shapes(served: AppServer, card: dict, route: str) -> None:
    body = {"model": "qwen3-reranker", "query": QUERY, "texts": DOCUMENTS, "return_text": True}
    response = post(served, route, {**body, "instruction": INSTRUCTION})
    assert response.status_code == 200, response.text
    ranks = response.json()
    expected = card[INSTRUCTION]
    assert [r["index"] for r in ranks] == list(np.argsort(-expected, kind="stable"))
    np.testing.assert_allclose([r["score"] for r in ranks], np.sort(expected)[::-1], atol=1e-5, rtol=0)
    assert [r["text"] for r in ranks] == [DOCUMENTS[r["index"]] for r in ranks]


def test_raw_scores_are_log_odds(served: AppServer, card: dict) -> None:
    body = {"model": "qwen3-reranker", "query": QUERY, "texts": DOCUMENTS, "raw_scores": True}
    ranks = post(served, "/rerank", body).json()
    raw = np.array([r["score"] for r in sorted(ranks, key=lambda r: r["index"])])
    np.testing.assert_allclose(1 / (1 + np.exp(-raw)), card[None], atol=1e-5, rtol=0)


def test_a_cross_encoder_refuses_an_instruction_in_the_routes_shape(served: AppServer) -> None:
    body = {"model": "cross-encoder", "query": QUERY, "documents": DOCUMENTS, "instruction": INSTRUCTION}
    response = post(served, "/v1/rerank", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "instruction" and "LLM rerankers" in error["message"]


def test_an_over_long_pair_without_truncation_is_a_413(served: AppServer) -> None:
    body = {"model": "qwen3-reranker", "query": QUERY, "documents": ["word " * 9000], "truncate": False}
    response = post(served, "/v1/rerank", body)
    assert response.status_code == 413, response.text
    assert "truncation is off" in response.json()["error"]["message"]
