"""Cross-encoder rerankers through our own loading path score pairs as `CrossEncoder.predict` does.

XLM-R with one label (bge-reranker-v2-m3), BERT with one label and with two (ms-marco cross-encoders,
token type ids in the pair), each a tiny random-weight folder loaded back through the real path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedserve.models.errors import InputTooLong, InvalidInput
from embedserve.models.loading import LoadedModel, load_model
from embedserve.models.reranker import Reranker, relevance
from embedserve.models.sources import guess_kind
from embedserve.models.spec import ModelSpec
from tests.fixtures.tiny_models import SAMPLE_TEXTS

QUERY = "Where do students find answers?"
DOCUMENTS = [*SAMPLE_TEXTS.values(), "short", "a much longer document about libraries " * 80, "Студенты"]
FOLDERS = ("tiny_reranker_dir", "tiny_bert_reranker_dir", "tiny_bert_reranker_2_dir")


@pytest.fixture(scope="module", params=FOLDERS)
def folder(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def loaded(folder: Path) -> LoadedModel:
    return load_model(ModelSpec(backend="torch", id="reranker", source=str(folder), kind="rerank", device="cpu"))


@pytest.fixture(scope="module")
def cross_encoder(folder: Path):  # type: ignore[no-untyped-def]
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(folder), device="cpu")


def scores(loaded: LoadedModel, query: str, documents: list[str], **options) -> np.ndarray:  # type: ignore[no-untyped-def]
    reranker = loaded.model
    assert isinstance(reranker, Reranker)
    raw = reranker.runner.run(reranker.tokenize(query, documents, truncate=options.pop("truncate", True)))
    return reranker.scores(raw, **options)


def test_pairs_are_tokenized_as_the_models_tokenizer_encodes_them(loaded: LoadedModel, cross_encoder) -> None:  # type: ignore[no-untyped-def]
    tokens = loaded.model.tokenize(QUERY, DOCUMENTS)
    limit = loaded.model.info.max_length
    expected = cross_encoder.tokenizer([QUERY] * len(DOCUMENTS), DOCUMENTS, truncation=True, max_length=limit)
    assert [t.ids for t in tokens] == expected["input_ids"]
    if "token_type_ids" in expected:
        assert [t.type_ids for t in tokens] == expected["token_type_ids"]
    assert [t.truncated for t in tokens] == [len(ids) == limit for ids in expected["input_ids"]]


def test_scores_equal_cross_encoder_predict(loaded: LoadedModel, cross_encoder) -> None:  # type: ignore[no-untyped-def]
    pairs = [(QUERY, d) for d in DOCUMENTS]
    logits = cross_encoder.predict(pairs, activation_fn=_identity(), convert_to_numpy=True)
    ours_raw = loaded.model.runner.run(loaded.model.tokenize(QUERY, DOCUMENTS))
    np.testing.assert_allclose(ours_raw, logits, atol=1e-4)
    # One label: the sigmoid, bge-reranker's convention; two labels: softmax of the last ("relevant") one.
    expected = _sigmoid(logits) if logits.ndim == 1 else _softmax(logits)[:, -1]
    ours = scores(loaded, QUERY, DOCUMENTS)
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    assert list(np.argsort(-ours, kind="stable")) == list(np.argsort(-expected, kind="stable"))


def test_packed_and_padded_forwards_score_alike(loaded: LoadedModel, folder: Path) -> None:
    padded = load_model(
        ModelSpec(backend="torch", id="padded", source=str(folder), kind="rerank", device="cpu", packing="off")
    )
    ours = loaded.model.runner.run(loaded.model.tokenize(QUERY, DOCUMENTS))
    np.testing.assert_allclose(ours, padded.model.runner.run(padded.model.tokenize(QUERY, DOCUMENTS)), atol=1e-5)


def test_raw_scores_are_the_log_odds_of_the_relevance_score(loaded: LoadedModel) -> None:
    raw = scores(loaded, QUERY, DOCUMENTS, raw_scores=True)
    np.testing.assert_allclose(_sigmoid(raw), scores(loaded, QUERY, DOCUMENTS), atol=1e-6)


def test_a_pair_is_scored_the_same_alone_and_in_a_padded_batch(loaded: LoadedModel) -> None:
    together = scores(loaded, QUERY, DOCUMENTS)
    alone = np.array([scores(loaded, QUERY, [d])[0] for d in DOCUMENTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_a_long_pair_is_refused_when_truncation_is_off(loaded: LoadedModel) -> None:
    with pytest.raises(InputTooLong, match=r"documents\[1\].*limit of \d+ tokens"):
        scores(loaded, QUERY, ["fits", "word " * 2000], truncate=False)
    assert scores(loaded, QUERY, ["fits"], truncate=False).shape == (1,)


def test_info_describes_a_reranker(loaded: LoadedModel, folder: Path, cross_encoder) -> None:  # type: ignore[no-untyped-def]
    info = loaded.model.info
    assert info.kind == "rerank" and info.backend == "torch" and info.dtype == "float32"
    assert info.max_length == cross_encoder.max_seq_length
    assert guess_kind(str(folder)) == "rerank"


def test_an_unknown_prompt_is_refused(loaded: LoadedModel) -> None:
    with pytest.raises(InvalidInput, match="no prompt 'nope'"):
        loaded.model.tokenize(QUERY, ["x"], prompt_name="nope")


def test_a_configured_prompt_goes_before_the_query(tiny_reranker_dir: Path) -> None:
    spec = ModelSpec(
        backend="torch",
        id="r",
        source=str(tiny_reranker_dir),
        kind="rerank",
        prompts={"web": "web search: "},
        default_prompt="web",
    )
    reranker = load_model(spec).model
    assert reranker.tokenize("q", ["d"]) == reranker.runner.tokenizer.encode_pairs("web search: q", ["d"])
    assert reranker.tokenize("q", ["d"], prompt_name="web") == reranker.tokenize("q", ["d"])


def test_an_embedding_folder_is_not_a_reranker(tiny_bert_dir: Path, minilm_dir: str) -> None:
    assert guess_kind(str(tiny_bert_dir)) == "embed"
    assert guess_kind(minilm_dir) == "embed"


@pytest.mark.parametrize(
    ("logits", "expected"),
    [
        (np.array([0.0, 2.0, -2.0]), [0.5, 0.8807971, 0.1192029]),
        (np.array([[0.0, 0.0], [0.0, 2.0]]), [0.5, 0.8807971]),  # softmax of the last label
        (np.array([[1.0, 1.0, 0.0]]), [1 / (2 * np.e + 1)]),  # three labels: p(last) against the others
        (np.array([-1000.0, 1000.0]), [0.0, 1.0]),  # no overflow
    ],
)
def test_relevance_is_a_probability(logits: np.ndarray, expected: list[float]) -> None:
    np.testing.assert_allclose(relevance(logits), expected, atol=1e-6)
    np.testing.assert_allclose(_sigmoid(relevance(logits, raw_scores=True)), expected, atol=1e-6)


def _identity():  # type: ignore[no-untyped-def]
    import torch

    return torch.nn.Identity()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=np.float64)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
