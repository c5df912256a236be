"""LLM rerankers (models.yes_no, models.torch_yes_no): a causal LM scores a pair by the last token's "yes" against
"no" under its template. The reference is Qwen3-Reranker's model card, computed here as the card writes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedserve.models.errors import InputTooLong, InvalidInput, ModelLoadError
from embedserve.models.loading import load_model
from embedserve.models.reranker import Reranker
from embedserve.models.sources import guess_kind, spec_from_cli
from embedserve.models.spec import ModelSpec
from embedserve.models.yes_no import QWEN3_RERANKER, template_for
from embedserve.quantize.served_export import resolve_backend
from tests.fixtures.model_cards import qwen3_reranker_scores as model_card_scores
from tests.fixtures.tiny_models import SAMPLE_TEXTS

# The card pads with max_length and padding=True, which transformers warns is ignored: its code, kept as written.
pytestmark = pytest.mark.filterwarnings("ignore:`max_length` is ignored")

QUERY = "Where do students find answers?"
DOCUMENTS = [*SAMPLE_TEXTS.values(), "short", "a much longer document about libraries " * 12, "Студенты"]


@pytest.fixture(scope="module")
def reranker(tiny_qwen3_reranker_dir: Path) -> Reranker:
    spec = ModelSpec(id="qwen3-reranker", source=str(tiny_qwen3_reranker_dir), kind="rerank", backend="torch")
    return load_model(spec).model


def score(reranker: Reranker, query: str, documents: list[str], **options: object) -> np.ndarray:
    return reranker.scores(reranker.runner.run(reranker.tokenize(query, documents, **options)))


def test_scores_equal_the_model_cards_computation(reranker: Reranker, tiny_qwen3_reranker_dir: Path) -> None:
    expected = model_card_scores(tiny_qwen3_reranker_dir, QUERY, DOCUMENTS)
    got = score(reranker, QUERY, DOCUMENTS)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.ptp(expected) > 1e-3  # the documents score differently: the comparison can fail


def test_the_instruction_is_the_requests_to_choose(reranker: Reranker, tiny_qwen3_reranker_dir: Path) -> None:
    instruction = "Given a question, find the sentence in Russian that answers it"
    expected = model_card_scores(tiny_qwen3_reranker_dir, QUERY, DOCUMENTS, instruction=instruction)
    got = score(reranker, QUERY, DOCUMENTS, instruction=instruction)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert not np.allclose(got, score(reranker, QUERY, DOCUMENTS), atol=1e-5)


def test_a_pair_scores_the_same_alone_and_in_a_left_padded_batch(reranker: Reranker) -> None:
    together = score(reranker, QUERY, DOCUMENTS)
    alone = np.concatenate([score(reranker, QUERY, [d]) for d in DOCUMENTS])
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)


def test_raw_scores_are_the_log_odds_of_yes(reranker: Reranker) -> None:
    raw = reranker.runner.run(reranker.tokenize(QUERY, DOCUMENTS))
    np.testing.assert_allclose(reranker.scores(raw, raw_scores=True), raw, rtol=0, atol=0)
    np.testing.assert_allclose(1 / (1 + np.exp(-raw)), score(reranker, QUERY, DOCUMENTS), atol=1e-6)


def test_a_long_document_is_cut_at_its_end_as_the_card_cuts_it(tiny_qwen3_reranker_dir: Path) -> None:
    spec = ModelSpec(id="short", source=str(tiny_qwen3_reranker_dir), kind="rerank", backend="torch", max_length=96)
    short = load_model(spec).model
    long_document = "The library finds the answer to your question quickly. " * 20
    (item,) = short.tokenize(QUERY, [long_document])
    assert len(item) == 96 and item.truncated
    suffix = short.runner.tokenizer.encode_pairs(QUERY, ["x"])[0].ids[-10:]
    assert item.ids[-10:] == suffix  # the template's end is kept: the model still answers
    expected = model_card_scores(tiny_qwen3_reranker_dir, QUERY, [long_document, "short"], max_length=96)
    np.testing.assert_allclose(score(short, QUERY, [long_document, "short"]), expected, atol=1e-5, rtol=0)
    with pytest.raises(InputTooLong, match="limit of 96 tokens"):
        short.tokenize(QUERY, [long_document], truncate=False)


def test_the_folder_is_guessed_a_reranker_and_served_by_torch_with_a_reason(
    tiny_qwen3_reranker_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert guess_kind(str(tiny_qwen3_reranker_dir)) == "rerank"
    spec = spec_from_cli(f"qwen3={tiny_qwen3_reranker_dir}")
    assert spec.kind == "rerank" and spec.backend == "auto"
    with caplog.at_level("INFO", logger="embedserve"):
        assert resolve_backend(spec).backend == "torch"
    assert "LLM (yes/no) rerankers" in caplog.text


def test_templates_are_chosen_by_family_or_by_name() -> None:
    assert template_for(None, "qwen3") is QWEN3_RERANKER
    assert template_for("qwen3-reranker", "llama") is QWEN3_RERANKER
    with pytest.raises(ValueError, match="name one with `template:`"):
        template_for(None, "llama")
    with pytest.raises(ValueError, match="unknown yes/no template"):
        ModelSpec(id="x", source="y", kind="rerank", template="nope")


def test_a_tokenizer_without_yes_and_no_is_refused_at_load(
    tmp_path: Path, tiny_qwen3_reranker_dir: Path, tiny_bert_dir: Path
) -> None:
    import shutil

    folder = tmp_path / "no-answers"
    shutil.copytree(tiny_qwen3_reranker_dir, folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (tiny_bert_dir / name).exists():
            shutil.copy(tiny_bert_dir / name, folder / name)
    spec = ModelSpec(id="x", source=str(folder), kind="rerank", backend="torch", template="qwen3-reranker")
    with pytest.raises(ModelLoadError, match="the tokenizer has no '(yes|no)' token"):
        load_model(spec)


def test_a_cross_encoder_is_told_no_instruction(tiny_bert_reranker_dir: Path) -> None:
    spec = ModelSpec(id="ce", source=str(tiny_bert_reranker_dir), kind="rerank", backend="torch")
    cross_encoder = load_model(spec).model
    with pytest.raises(InvalidInput, match="instruction applies to LLM rerankers"):
        cross_encoder.tokenize(QUERY, DOCUMENTS, instruction="anything")


def test_embedserve_quantize_says_in_one_line_why_not_yet(
    tiny_qwen3_reranker_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from embedserve.quantize.cli import main

    assert main([str(tiny_qwen3_reranker_dir), "--out", str(tmp_path / "int8"), "--no-progress"]) != 0
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "does not take LLM (yes/no) rerankers yet" in line
