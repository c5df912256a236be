"""TEI's base route, /similarity and /info, spoken to with huggingface_hub's InferenceClient as its users
do (it posts to the server's base URL and cannot send `model`: the X-Model header chooses)."""

from __future__ import annotations

import numpy as np
import pytest
from huggingface_hub import InferenceClient

from tests.inprocess import AppServer
from tests.support import cosine_rows

TEXTS = ["How do embeddings work?", "Библиотека открыта до восьми.", "짧은 문장"]


@pytest.fixture(scope="module")
def served(several_models: AppServer) -> AppServer:
    return several_models


def openai_vectors(served: AppServer, model: str, texts: list[str]) -> np.ndarray:
    body = served.http.post("/v1/embeddings", json={"model": model, "input": texts}).json()
    return np.array([row["embedding"] for row in body["data"]])


@pytest.fixture
def client_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite runs with HF_HUB_OFFLINE=1, which the client applies to any URL; these go to loopback."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.mark.usefixtures("client_online")
def test_inference_client_feature_extraction_with_the_model_in_a_header(served: AppServer) -> None:
    for model in ("all-MiniLM-L6-v2", "gemma"):
        client = InferenceClient(model=served.listen(), headers={"X-Model": model})
        got = np.asarray(client.feature_extraction(TEXTS[0]))
        assert cosine_rows(got.reshape(1, -1), openai_vectors(served, model, TEXTS[:1])).min() > 0.99999
    # Without the header and with two embedders served, the request must say which: TEI's error shape.
    refused = served.http.post("/", json={"inputs": "hello"})
    assert refused.status_code == 400 and refused.json()["error_type"] == "Validation"
    assert "name one of: all-MiniLM-L6-v2, gemma" in refused.json()["error"]


@pytest.mark.usefixtures("client_online")
def test_inference_client_sentence_similarity(served: AppServer) -> None:
    client = InferenceClient(model=served.listen(), headers={"X-Model": "all-MiniLM-L6-v2"})
    scores = client.sentence_similarity(
        "A man is eating food.", other_sentences=["A man eats bread.", "The sky is blue."]
    )
    vectors = openai_vectors(
        served, "all-MiniLM-L6-v2", ["A man is eating food.", "A man eats bread.", "The sky is blue."]
    )
    np.testing.assert_allclose(scores, vectors[1:] @ vectors[0], atol=1e-5)
    assert scores[0] > scores[1]


def test_the_base_route_reranks_a_query_and_texts(served: AppServer) -> None:
    body = {"query": "Where do students find answers?", "texts": ["Bananas are yellow.", "Ask the librarians."]}
    assert (
        served.http.post("/", json=body, headers={"X-Model": "rr"}).json()
        == served.http.post("/rerank", json={**body, "model": "rr"}).json()
    )


def test_info_describes_the_chosen_model_in_teis_fields(served: AppServer) -> None:
    info = served.http.get("/info", headers={"X-Model": "all-MiniLM-L6-v2"}).json()
    assert info["model_id"] == "all-MiniLM-L6-v2" and info["model_type"] == {"embedding": {"pooling": None}}
    assert info["max_input_length"] == 256 and info["max_client_batch_size"] == 2048 and info["auto_truncate"] is True
    labels = {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}  # TEI's ClassifierModel fields
    assert served.http.get("/info?model=rr").json()["model_type"] == {"reranker": labels}
    several = served.http.get("/info")
    assert several.status_code == 400 and "name one with ?model= or X-Model" in several.json()["error"]


def test_info_reports_the_batch_token_budget_the_models_batcher_uses(served: AppServer) -> None:
    # Unset, the budget is the runner's own on CPU (4096 for torch), not the configured 16384.
    for model, kind in (("all-MiniLM-L6-v2", "embed"), ("rr", "rerank")):
        batcher = served.app.state.host.get(model, kind).batcher
        info = served.http.get("/info", params={"model": model}).json()
        assert info["max_batch_tokens"] == batcher.config.max_batch_tokens
