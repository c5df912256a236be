"""Packed execution of encoders (BERT, XLM-R, bidirectional Gemma3, ModernBERT) and Qwen3: the padded
forward's outputs, from real tokens only."""

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


PACKED_FOLDERS = ["tiny_bert_dir", "tiny_xlmr_dir", "tiny_gemma3_dir", "tiny_modernbert_dir", "tiny_qwen3_dir"]
"""A tiny folder of each family that packs (Qwen3's tokenizer pads left, the others right)."""


@pytest.mark.parametrize("family", [*PACKED_FOLDERS, "minilm_dir"])
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


@pytest.mark.parametrize("family", PACKED_FOLDERS)
def test_sentence_embeddings_equal_the_padded_pipeline(family: str, request: pytest.FixtureRequest) -> None:
    """The folder's own pooling (mean, CLS, or Qwen3's last token, where the left padding puts it
    last in every row) over the packed grid, against sentence-transformers' padded forward."""
    st_model, _ = _encoder(request.getfixturevalue(family))
    features = {name: value for name, value in st_model.tokenize(TEXTS).items() if name != "modality"}
    encoder = packed_model(st_model[0].auto_model)
    with torch.inference_mode():
        expected = st_model(dict(features))["sentence_embedding"]
        packed = {
            "attention_mask": features["attention_mask"],
            "token_embeddings": encoder(encoder.pack({k: v.numpy() for k, v in features.items()}), torch.device("cpu")),
        }
        for module in list(st_model)[1:]:
            packed = module(packed)
    assert (packed["sentence_embedding"] - expected).abs().max() <= 1e-5


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


def test_modernbert_local_layers_attend_within_their_window(tiny_modernbert_dir: Path) -> None:
    """Layers 0 and 2 attend globally, layer 1 within ±4 tokens (local_attention 8), each with its own
    rope theta; widened to a global window, the packed output must move away from the model's."""
    from tests.fixtures.tiny_models import MODERNBERT_LOCAL_ATTENTION

    st_model, hf_model = _encoder(tiny_modernbert_dir)
    local = [layer.attn.local_attention != (-1, -1) for layer in hf_model.layers]
    assert local == [False, True, False]
    features = {name: value for name, value in st_model.tokenize(TEXTS).items() if name != "modality"}
    assert features["attention_mask"].sum(dim=1).max() > MODERNBERT_LOCAL_ATTENTION
    arrays = {name: value.numpy() for name, value in features.items()}
    mask = features["attention_mask"].bool()
    with torch.inference_mode():
        padded = hf_model(**features).last_hidden_state
        windowed = packed_model(hf_model)(packed_model(hf_model).pack(arrays), torch.device("cpu"))
        hf_model.layers[1].attn.local_attention = (-1, -1)
        unwindowed = packed_model(hf_model)(packed_model(hf_model).pack(arrays), torch.device("cpu"))
    torch.testing.assert_close(windowed[mask], padded[mask], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unwindowed[mask], padded[mask], atol=1e-3)  # the window did matter


def test_qwen3_attends_causally_whichever_side_the_batch_is_padded_on(tiny_qwen3_dir: Path) -> None:
    """A token's state depends on it and the tokens before it only: a text's prefix packs to the same
    states as the prefix alone, and a right-padded batch (the server's) to those of the left-padded one
    (the tokenizer's) up to float rounding, though its rotary positions start at 0, not at the padding."""
    st_model, hf_model = _encoder(tiny_qwen3_dir)
    encoder = packed_model(hf_model)
    left = {name: value.numpy() for name, value in st_model.tokenize(TEXTS).items() if name != "modality"}
    lengths = left["attention_mask"].sum(axis=1)
    right = {name: np.zeros_like(value) for name, value in left.items()}
    for row, n in enumerate(lengths):
        for name in left:
            right[name][row, :n] = left[name][row, -n:]
    with torch.inference_mode():
        from_left = encoder(encoder.pack(left), torch.device("cpu"))[torch.from_numpy(left["attention_mask"]).bool()]
        from_right = encoder(encoder.pack(right), torch.device("cpu"))[torch.from_numpy(right["attention_mask"]).bool()]
        long_row = int(np.argmax(lengths))
        ids = right["input_ids"][long_row : long_row + 1, : lengths[long_row]]
        prefix = {"input_ids": ids[:, :7], "attention_mask": np.ones((1, 7), dtype=np.int64)}
        whole = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        prefix_alone = encoder(encoder.pack(prefix), torch.device("cpu"))[0]
        prefix_in_whole = encoder(encoder.pack(whole), torch.device("cpu"))[0, :7]
    torch.testing.assert_close(from_right, from_left, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prefix_in_whole, prefix_alone, atol=1e-5, rtol=1e-5)


def test_qwen3_variants_the_runner_cannot_run_are_refused_with_the_reason() -> None:
    from transformers import Qwen3Config, Qwen3Model

    tiny = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=8)  # fmt: skip
    assert packing_unsupported(Qwen3Model(Qwen3Config(**tiny))) is None
    sliding = Qwen3Model(Qwen3Config(**tiny, use_sliding_window=True, sliding_window=4, max_window_layers=1))
    assert "sliding-window" in (packing_unsupported(sliding) or "")
    bidirectional = Qwen3Model(Qwen3Config(**tiny, use_bidirectional_attention=True))
    assert "bidirectional" in (packing_unsupported(bidirectional) or "")
