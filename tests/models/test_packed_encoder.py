"""Packed execution of BERT-family encoders: the padded forward's outputs, from real tokens only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from embedserve.models.families import FAMILIES, Family
from embedserve.models.packed_encoder import (
    PackedClassifier,
    attention_groups,
    classifier_unsupported,
    pack,
    packed_model,
    packing_unsupported,
)
from tests.fixtures.tiny_models import SAMPLE_TEXTS

TEXTS = [*SAMPLE_TEXTS.values(), "short", "a much longer sentence " * 40, "x"]


def _encoder(folder: Path):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return model, model[0].auto_model


@pytest.mark.parametrize("family", ["tiny_bert_dir", "tiny_xlmr_dir", "minilm_dir", "tiny_gemma3_dir"])
def test_hidden_states_equal_the_padded_forward_at_every_real_token(
    family: str, request: pytest.FixtureRequest
) -> None:
    st_model, hf_model = _encoder(request.getfixturevalue(family))
    features = {name: value for name, value in st_model.tokenize(TEXTS).items() if name != "modality"}
    arrays = {name: value.numpy() for name, value in features.items()}
    assert arrays["attention_mask"].sum() < arrays["attention_mask"].size / 2  # mostly padding
    encoder = packed_model(hf_model)
    batch = encoder.pack(arrays)
    assert len(batch.groups) > 1  # the long text attends apart from the short ones
    with torch.inference_mode():
        padded = hf_model(**features).last_hidden_state
        packed = encoder(batch, torch.device("cpu"))
    mask = features["attention_mask"].bool()
    assert packed.shape == padded.shape
    torch.testing.assert_close(packed[mask], padded[mask], atol=1e-5, rtol=1e-5)
    assert not packed[~mask].any()  # pad positions stay zero: pooling never sees them


def test_pair_inputs_keep_their_token_types(tiny_bert_dir: Path) -> None:
    st_model, hf_model = _encoder(tiny_bert_dir)
    encoded = st_model.tokenizer(
        ["a query", "another query here"], ["its document", "doc"], padding=True, return_tensors="pt"
    )
    assert encoded["token_type_ids"].any()
    arrays = {name: value.numpy() for name, value in encoded.items()}
    encoder = packed_model(hf_model)
    with torch.inference_mode():
        padded = hf_model(**encoded).last_hidden_state
        packed = encoder(encoder.pack(arrays), torch.device("cpu"))
    mask = encoded["attention_mask"].bool()
    torch.testing.assert_close(packed[mask], padded[mask], atol=1e-5, rtol=1e-5)


def test_positions_follow_each_family_rule() -> None:
    ids = np.array([[5, 6, 7], [8, 1, 1]])
    mask = np.array([[1, 1, 1], [1, 0, 0]])
    bert = pack({"input_ids": ids, "attention_mask": mask}, roberta_positions=False, padding_idx=0, hidden=384)
    assert bert.input_ids.tolist() == [5, 6, 7, 8]
    assert bert.position_ids.tolist() == [0, 1, 2, 0]
    assert bert.index.tolist() == [0, 1, 2, 3]
    roberta = pack({"input_ids": ids, "attention_mask": mask}, roberta_positions=True, padding_idx=1, hidden=384)
    assert roberta.position_ids.tolist() == [2, 3, 4, 2]  # counted from padding_idx + 1


def test_short_rows_attend_apart_from_a_long_one_only_where_it_saves_work() -> None:
    groups = attention_groups(np.array([256, 12, 10, 250, 60]), hidden=384)
    assert [g.tolist() for g in groups] == [[0, 3], [1, 2, 4]]
    assert len(attention_groups(np.array([16, 6, 9, 12]), hidden=384)) == 1  # queries: one grid
    assert len(attention_groups(np.array([128, 40]), hidden=384)) == 1  # padding costs less than a split


def test_gemma3_sliding_window_layers_attend_within_the_window(tiny_gemma3_dir: Path) -> None:
    """EmbeddingGemma's window (257 after transformers halves the configured 512) spans every text of
    the tiny fixtures; narrowed to 5 tokens here, the sliding layer must mask as the model does."""
    st_model, hf_model = _encoder(tiny_gemma3_dir)
    hf_model.config.sliding_window = 5
    for layer in hf_model.layers:
        if layer.self_attn.is_sliding:
            layer.self_attn.sliding_window = 5
    features = {name: value for name, value in st_model.tokenize(TEXTS).items() if name != "modality"}
    encoder = packed_model(hf_model)
    with torch.inference_mode():
        padded = hf_model(**features).last_hidden_state
        packed = encoder(encoder.pack({name: value.numpy() for name, value in features.items()}), torch.device("cpu"))
        encoder_wide = packed_model(hf_model)
        for layer in hf_model.layers:
            layer.self_attn.sliding_window = None
        unwindowed = encoder_wide(encoder_wide.pack({k: v.numpy() for k, v in features.items()}), torch.device("cpu"))
    mask = features["attention_mask"].bool()
    torch.testing.assert_close(packed[mask], padded[mask], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unwindowed[mask], padded[mask], atol=1e-3)  # the window did matter


def test_other_models_are_refused_with_the_reason(tmp_path: Path) -> None:
    from transformers import Gemma3TextConfig, Gemma3TextModel

    config = Gemma3TextConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, use_bidirectional_attention=False,
    )  # fmt: skip
    causal = Gemma3TextModel(config)
    assert packing_unsupported(causal) == "Gemma3 with causal attention"
    with pytest.raises(ValueError, match="cannot run this model packed"):
        packed_model(causal)
    assert "does not run packed" in (packing_unsupported(torch.nn.Linear(2, 2)) or "")


def test_whether_a_model_packs_is_its_familys_word(tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from embedserve.models import packed_encoder

    _, hf_model = _encoder(tiny_bert_dir)
    assert packing_unsupported(hf_model) is None
    monkeypatch.setattr(packed_encoder, "family_of", lambda model_type: Family(model_type, (model_type,)))
    assert "does not run packed" in (packing_unsupported(hf_model) or "")


def test_classifiers_the_families_do_not_list_are_refused_naming_those_they_do() -> None:
    reason = classifier_unsupported(torch.nn.Linear(2, 2)) or ""
    assert reason.startswith("Linear is not one of")
    assert all(name in reason for family in FAMILIES for name in family.classifiers)


@pytest.mark.parametrize("folder", ["tiny_reranker_dir", "tiny_bert_reranker_dir", "tiny_bert_reranker_2_dir"])
def test_cross_encoder_logits_equal_the_padded_forward(folder: str, request: pytest.FixtureRequest) -> None:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(request.getfixturevalue(folder)), device="cpu")
    hf_model = model[0].auto_model
    documents = [*TEXTS[:-1], "d"]
    encoded = model.tokenizer(
        ["a query"] * len(documents), documents, padding=True, truncation=True, return_tensors="pt"
    )
    classifier = PackedClassifier(hf_model)
    batch = classifier.pack({name: value.numpy() for name, value in encoded.items()})
    assert len(batch.groups) > 1
    with torch.inference_mode():
        expected = hf_model(**encoded).logits
        logits = classifier(batch, torch.device("cpu"))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
