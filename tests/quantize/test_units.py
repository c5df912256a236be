"""Small pieces: per-target settings, the numpy pipeline against
sentence-transformers' own modules, rank statistics, calibration files, the built-in texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedserve.quantize.quantize import read_calibration, resolve_target, settings_for
from embedserve.quantize.report import relevance, rerank_accuracy, spearman
from embedserve.quantize.texts import RERANK_SETS, SENTENCES, language, rerank_pairs


def test_settings_protect_avx2_from_saturation_only() -> None:
    avx2, vnni, arm = settings_for("avx2"), settings_for("avx512_vnni"), settings_for("arm64")
    assert avx2.reduce_range and not vnni.reduce_range and not arm.reduce_range
    assert settings_for(resolve_target("auto")).reduce_range  # the default: 7-bit, exact on every CPU
    assert all(s.per_channel and s.weight_type == "QInt8" for s in (avx2, vnni, arm))
    assert "Gather" not in avx2.op_types  # embedding tables stay fp32
    static = settings_for("avx2", "static")
    assert static.quant_format == "QDQ" and static.calibrate_method == "MinMax"
    with pytest.raises(ValueError):
        settings_for("avx2", "weird")  # type: ignore[arg-type]


def test_spearman() -> None:
    a = np.array([0.1, 0.5, 0.3, 0.9])
    assert spearman(a, a * 10 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.9486833)


def test_relevance_of_two_label_logits_follows_the_last_label() -> None:
    logits = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    assert list(np.argsort(relevance(logits))) == [1, 0, 2]


def test_rerank_accuracy_notices_a_reordering() -> None:
    reference = np.arange(len(rerank_pairs()), dtype=np.float32)[::-1].copy()
    same = rerank_accuracy(reference, reference + 0.01)
    assert same["spearman"] == pytest.approx(1.0) and same["top1_agreement"] == 1.0
    flipped = rerank_accuracy(reference, -reference)
    assert flipped["top1_agreement"] == 0.0 and flipped["spearman"] < 0


def test_calibration_files(tmp_path: Path) -> None:
    texts = tmp_path / "t.txt"
    texts.write_text("one\n\n  two  \nтри\n", encoding="utf-8")
    assert read_calibration(texts, "embed") == ["one", "two", "три"]
    pairs = tmp_path / "p.tsv"
    pairs.write_text("q1\td1\nq2\td2\n", encoding="utf-8")
    assert read_calibration(pairs, "rerank") == [("q1", "d1"), ("q2", "d2")]
    with pytest.raises(ValueError, match="TAB"):
        read_calibration(texts, "rerank")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no texts"):
        read_calibration(tmp_path / "empty.txt", "embed")


def test_built_in_sets_are_multilingual() -> None:
    languages = [language(t) for t in SENTENCES]
    assert len(SENTENCES) >= 30 and len(set(SENTENCES)) == len(SENTENCES)
    assert {lang: languages.count(lang) >= 10 for lang in ("en", "ko", "ru")} == {"en": True, "ko": True, "ru": True}
    queries = {language(q) for q, _ in RERANK_SETS}
    assert queries == {"en", "ko", "ru"} and all(len(docs) >= 5 for _, docs in RERANK_SETS)


def test_optimizer_families() -> None:
    from embedserve.quantize.quantize import optimizer_model_type

    assert optimizer_model_type("bert") == optimizer_model_type("xlm-roberta") == "bert"
    assert optimizer_model_type("gemma3_text") is None
    assert optimizer_model_type("t5") is None  # an unknown family gets no fusions


def test_optimizer_fusions_are_the_familys_word(monkeypatch: pytest.MonkeyPatch) -> None:
    """quantize keeps no list of its own: every model type fuses as its family says, and a family that
    changed its mind would be fused (or not) accordingly."""
    from embedserve.models.families import FAMILIES, Family
    from embedserve.quantize import quantize as quantize_module
    from embedserve.quantize.quantize import optimizer_model_type

    for family in FAMILIES:
        assert {optimizer_model_type(t) for t in family.model_types} == {family.onnx_fusions}, family.name
    monkeypatch.setattr(quantize_module, "family_of", lambda _: Family("bert", ("bert",), onnx_fusions="other"))
    assert optimizer_model_type("bert") == "other"


def test_evaluation_set_covers_languages_code_short_and_long() -> None:
    from embedserve.quantize.eval_texts import LANGUAGES, TOPICS, eval_texts, language, rerank_sets

    texts = eval_texts()
    assert len(texts) >= 300 and len(set(texts)) == len(texts)
    groups = [language(t) for t in texts]
    for group in (*LANGUAGES, "code", "short"):
        assert groups.count(group) >= 20, group
    assert groups.count("long") == len(LANGUAGES) and "other" not in groups
    assert all(len(t) > 600 for t in texts if language(t) == "long")  # past 256 tokens in every script
    assert all(len(t) <= 12 for t in texts if language(t) == "short")
    assert all(len(sentences) == len(LANGUAGES) for _, sentences in TOPICS)
    sets = rerank_sets()
    assert len(sets) == len(TOPICS) and all(len(docs) == 8 and len(set(docs)) == 8 for _, docs in sets)


def test_retrieval_agreement_and_worst_texts() -> None:
    from embedserve.quantize.report import embed_accuracy, retrieval_agreement

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 16))
    same = retrieval_agreement(x, x.copy())
    assert same["top10_overlap"] == 1.0 and same["top1_agreement"] == 1.0
    assert same["mean_query_spearman"] == pytest.approx(1.0)
    noisy = retrieval_agreement(x, x + rng.normal(scale=0.5, size=x.shape))
    assert noisy["top10_overlap"] < 1.0 and noisy["min_top10_overlap"] <= noisy["top10_overlap"]

    texts = [f"text {i}" for i in range(40)]
    y = x.copy()
    y[7] = -x[7]  # one text far off
    y[3] += rng.normal(scale=0.3, size=16)
    report = embed_accuracy(x, y, texts)
    assert report["min_cosine"] == pytest.approx(-1.0)
    assert [w["text"] for w in report["worst"][:2]] == ["text 7", "text 3"] and len(report["worst"]) == 5
