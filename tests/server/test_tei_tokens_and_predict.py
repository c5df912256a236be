"""TEI's token routes (/embed_all, /tokenize, /decode) and sequence classification (/predict, and POST /
for huggingface_hub's text_classification), on the real MiniLM and a tiny three-label classifier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import InferenceClient

from tests.fixtures.tiny_models import SENTIMENT_LABELS
from tests.inprocess import AppServer, start_app

MINILM = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def served(tiny_classifier_dir: Path) -> Iterator[AppServer]:
    running = start_app(None, "--model", MINILM, "--model", f"sentiment={tiny_classifier_dir}")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def classifier_logits(tiny_classifier_dir: Path):  # type: ignore[no-untyped-def]
    """The folder's own model through transformers: the reference for /predict."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dir)

    def logits(*texts: str) -> np.ndarray:
        with torch.inference_mode():
            return model(**tokenizer(*texts, return_tensors="pt")).logits[0].numpy()

    return logits


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_embed_all_is_the_models_token_embeddings(served: AppServer, reference_model) -> None:  # type: ignore[no-untyped-def]
    texts = ["Token embeddings, one per token.", "short"]
    got = served.http.post("/embed_all", json={"inputs": texts, "model": MINILM}).json()
    for text, rows in zip(texts, got):
        want = reference_model.encode(text, output_value="token_embeddings", convert_to_numpy=True)
        assert np.asarray(rows).shape == want.shape  # [CLS] ... [SEP]: special tokens included
        np.testing.assert_allclose(rows, want, atol=1e-4)
    # Mean-pooled and normalized, the token embeddings are the text's embedding.
    mean = np.asarray(got[1]).mean(axis=0)
    vector = served.http.post("/embed", json={"text": "short", "model": MINILM}).json()["embedding"]
    np.testing.assert_allclose(mean / np.linalg.norm(mean), vector, atol=1e-5)
    refused = served.http.post("/embed_all", json={"inputs": "x", "model": "sentiment"})
    assert refused.status_code == 404 and "served for classify, not embed" in refused.json()["error"]


def test_tokenize_shows_ids_and_the_characters_they_cover(served: AppServer) -> None:
    text = "Hello, world!"
    got = served.http.post("/tokenize", json={"inputs": text, "model": MINILM}).json()
    assert [(t["id"], t["text"], t["special"]) for t in got[0]] == [
        (101, "[CLS]", True), (7592, "Hello", False), (1010, ",", False), (2088, "world", False),
        (999, "!", False), (102, "[SEP]", True),
    ]  # fmt: skip
    assert all(text[t["start"] : t["stop"]] == t["text"] for t in got[0] if not t["special"])
    plain = served.http.post(
        "/tokenize", json={"inputs": [text, "b"], "add_special_tokens": False}, headers={"X-Model": MINILM}
    )
    assert [t["id"] for t in plain.json()[0]] == [7592, 1010, 2088, 999] and len(plain.json()) == 2
    several = served.http.post("/tokenize", json={"inputs": text})
    assert several.status_code == 400 and "name one with `model` or X-Model" in several.json()["error"]


def test_decode_and_token_id_inputs_mean_the_same_text(served: AppServer) -> None:
    decoded = served.http.post("/decode", json={"ids": [101, 7592, 2088, 102], "model": MINILM}).json()
    assert decoded == ["hello world"]
    both = served.http.post(
        "/decode", json={"ids": [[101, 7592, 102], [2088]], "skip_special_tokens": False, "model": MINILM}
    ).json()
    assert both == ["[CLS] hello [SEP]", "world"]
    # Token-id inputs are the content: [7592, 2088] embeds as "hello world" does ([CLS]/[SEP] added).
    ids = served.http.post("/v1/embeddings", json={"model": MINILM, "input": [[7592, 2088]]}).json()
    text = served.http.post("/v1/embeddings", json={"model": MINILM, "input": "hello world"}).json()
    np.testing.assert_allclose(ids["data"][0]["embedding"], text["data"][0]["embedding"], atol=1e-6)
    bad = served.http.post("/decode", json={"ids": [10**9], "model": MINILM})
    assert bad.status_code == 400 and "outside the vocabulary" in bad.json()["error"]


def test_predict_gives_each_labels_probability_best_first(served: AppServer, classifier_logits) -> None:  # type: ignore[no-untyped-def]
    one = served.http.post("/predict", json={"inputs": "I like you."}).json()  # the only classifier
    want = softmax(classifier_logits("I like you."))
    assert [p["label"] for p in one] == [SENTIMENT_LABELS[i] for i in np.argsort(-want, kind="stable")]
    np.testing.assert_allclose(sorted(p["score"] for p in one), sorted(want), atol=1e-5)
    pair = served.http.post("/predict", json={"inputs": ["I like you.", "I love you."]}).json()
    assert {p["label"]: p["score"] for p in pair} == pytest.approx(
        dict(zip(SENTIMENT_LABELS, softmax(classifier_logits("I like you.", "I love you.")).tolist())), abs=1e-5
    )
    batch = served.http.post("/predict", json={"inputs": ["I like you.", "b", "c"], "raw_scores": True}).json()
    assert len(batch) == 3 and {p["label"]: p["score"] for p in batch[0]} == pytest.approx(
        dict(zip(SENTIMENT_LABELS, classifier_logits("I like you.").tolist())), abs=1e-4
    )
    wrong = served.http.post("/predict", json={"inputs": "x", "model": MINILM})
    assert wrong.status_code == 404 and "served for embed, not classify" in wrong.json()["error"]


def test_info_names_a_classifiers_labels(served: AppServer) -> None:
    info = served.http.get("/info", headers={"X-Model": "sentiment"}).json()
    assert info["model_type"] == {
        "classifier": {
            "id2label": {str(i): label for i, label in enumerate(SENTIMENT_LABELS)},
            "label2id": {label: i for i, label in enumerate(SENTIMENT_LABELS)},
        }
    }


def test_inference_client_text_classification(served: AppServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the client calls loopback
    client = InferenceClient(model=served.listen(), headers={"X-Model": "sentiment"})
    got = client.text_classification("I like you.")
    predicted = served.http.post("/predict", json={"inputs": "I like you."}).json()
    assert [(g.label, round(g.score, 6)) for g in got] == [(p["label"], round(p["score"], 6)) for p in predicted]
    top = client.text_classification("I like you.", top_k=1, function_to_apply="sigmoid")
    assert len(top) == 1 and top[0].label == predicted[0]["label"] and 0 < top[0].score < 1
