"""The tiny model folders load through the real loading path and behave like the families they stand for."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.tiny_models import (
    BERT,
    CORPUS,
    E5_PROMPTS,
    GEMMA3,
    GEMMA3_PROMPTS,
    GEMMA3_SLIDING_WINDOW,
    RERANKER,
    SAMPLE_TEXTS,
    XLMR,
    TinyModelDirs,
    bert_embedder,
    build_all,
    gemma3_embedder,
    xlmr_embedder,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[2]
EMBEDDERS = {"gemma3": GEMMA3, "xlmr": XLMR, "bert": BERT}
TEXTS = [*SAMPLE_TEXTS.values(), *CORPUS[:3], CORPUS[30], CORPUS[-2], "short", "a b c " * 40]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def st_models(tiny_model_dirs: TinyModelDirs):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    return {family: SentenceTransformer(str(tiny_model_dirs[family]), device="cpu") for family in EMBEDDERS}


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


def test_building_all_four_folders_from_scratch_gives_loadable_folders(tmp_path: Path) -> None:
    from tests.fixtures import tiny_models

    for cached in (tiny_models._gemma_backend_json, tiny_models._xlmr_backend_json, tiny_models._bert_backend_json):
        cached.cache_clear()  # the tokenizers are trained again too
    dirs = build_all(tmp_path)
    for folder in dirs.as_dict().values():
        assert (folder / "config.json").is_file()
        assert (folder / "model.safetensors").stat().st_size < 2_000_000  # tiny, really


def test_builds_are_deterministic(tmp_path: Path, tiny_gemma3_dir: Path) -> None:
    again = gemma3_embedder(tmp_path / "again", seed=0)
    other = gemma3_embedder(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "2_Dense/model.safetensors", "3_Dense/model.safetensors"):
        assert (again / name).read_bytes() == (tiny_gemma3_dir / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (again / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()


def test_trained_tokenizers_are_identical_across_processes() -> None:
    """The tokenizers trainers iterate hash maps; the builders must not let that leak into the vocab."""
    from tests.fixtures import tiny_models

    code = (
        "import hashlib\n"
        "from tests.fixtures import tiny_models as t\n"
        "for f in (t._gemma_backend_json, t._xlmr_backend_json, t._bert_backend_json):\n"
        "    print(hashlib.sha256(f().encode()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "random"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    here = [
        hashlib.sha256(f().encode()).hexdigest()
        for f in (tiny_models._gemma_backend_json, tiny_models._xlmr_backend_json, tiny_models._bert_backend_json)
    ]
    assert out.stdout.split() == here


# ---------------------------------------------------------------------------------------------
# Folder contents
# ---------------------------------------------------------------------------------------------


def _modules(folder: Path) -> list[str]:
    return [entry["type"].rsplit(".", 1)[-1] for entry in json.loads((folder / "modules.json").read_text())]


def test_folders_hold_the_expected_module_pipelines(tiny_model_dirs: TinyModelDirs) -> None:
    gemma3, xlmr, bert = tiny_model_dirs.gemma3, tiny_model_dirs.xlmr, tiny_model_dirs.bert
    assert _modules(gemma3) == ["Transformer", "Pooling", "Dense", "Dense", "Normalize"]
    assert _modules(xlmr) == ["Transformer", "Pooling", "Normalize"]
    assert _modules(bert) == ["Transformer", "Pooling", "Normalize"]
    assert json.loads((gemma3 / "1_Pooling/config.json").read_text())["pooling_mode"] == "mean"
    assert json.loads((xlmr / "1_Pooling/config.json").read_text())["pooling_mode"] == "cls"
    assert json.loads((bert / "1_Pooling/config.json").read_text())["pooling_mode"] == "mean"
    dense1 = json.loads((gemma3 / "2_Dense/config.json").read_text())
    dense2 = json.loads((gemma3 / "3_Dense/config.json").read_text())
    assert (dense1["in_features"], dense1["out_features"], dense1["bias"]) == (64, 256, False)
    assert (dense2["in_features"], dense2["out_features"], dense2["bias"]) == (256, GEMMA3.dimension, False)
    assert dense1["activation_function"] == dense2["activation_function"] == "torch.nn.modules.linear.Identity"

    gemma_st = json.loads((gemma3 / "config_sentence_transformers.json").read_text())
    assert gemma_st["prompts"] == GEMMA3_PROMPTS and gemma_st["default_prompt_name"] is None
    bert_st = json.loads((bert / "config_sentence_transformers.json").read_text())
    assert E5_PROMPTS.items() <= bert_st["prompts"].items()

    reranker_files = {p.name for p in tiny_model_dirs.reranker.iterdir()}
    assert "modules.json" not in reranker_files  # a plain transformers folder, as bge-reranker-v2-m3 is
    config = json.loads((tiny_model_dirs.reranker / "config.json").read_text())
    assert config["architectures"] == ["XLMRobertaForSequenceClassification"]
    assert len(config["id2label"]) == 1


def test_gemma3_config_is_bidirectional_with_embeddinggemmas_window(tiny_gemma3_dir: Path) -> None:
    from transformers import AutoConfig

    raw = json.loads((tiny_gemma3_dir / "config.json").read_text())
    assert raw["model_type"] == "gemma3_text" and raw["architectures"] == ["Gemma3TextModel"]
    assert raw["use_bidirectional_attention"] is True
    assert raw["sliding_window"] == GEMMA3_SLIDING_WINDOW  # as EmbeddingGemma's config.json holds it
    loaded = AutoConfig.from_pretrained(tiny_gemma3_dir)
    assert loaded.sliding_window == GEMMA3_SLIDING_WINDOW // 2 + 1  # transformers' exclusive-bound rewrite


# ---------------------------------------------------------------------------------------------
# Loading and encoding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(EMBEDDERS))
def test_embedder_encodes_unit_vectors_of_the_expected_size(st_models, family: str) -> None:  # type: ignore[no-untyped-def]
    spec = EMBEDDERS[family]
    model = st_models[family]
    assert model.get_embedding_dimension() == spec.dimension
    assert model.max_seq_length == spec.max_seq_length
    vectors = model.encode(TEXTS, batch_size=4)
    assert vectors.shape == (len(TEXTS), spec.dimension) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    off_diagonal = sims[~np.eye(len(TEXTS), dtype=bool)]
    assert off_diagonal.max() < 0.995, "different texts should give clearly different vectors"


@pytest.mark.parametrize("family", list(EMBEDDERS))
def test_embeddings_do_not_depend_on_batch_padding(st_models, family: str) -> None:  # type: ignore[no-untyped-def]
    model = st_models[family]
    batched = model.encode(TEXTS, batch_size=len(TEXTS))
    alone = np.stack([model.encode([text])[0] for text in TEXTS])
    np.testing.assert_allclose(batched, alone, atol=2e-5)


@pytest.mark.parametrize("family", list(EMBEDDERS))
def test_overlong_input_is_truncated_not_rejected(st_models, family: str) -> None:  # type: ignore[no-untyped-def]
    model = st_models[family]
    long_text = " ".join(CORPUS) * 8
    assert len(model.tokenizer(long_text)["input_ids"]) > model.max_seq_length
    vector = model.encode([long_text])[0]
    assert np.isfinite(vector).all()


@pytest.mark.parametrize("family", list(EMBEDDERS))
def test_hub_layout_loads_to_the_same_model(tmp_path: Path, st_models, family: str) -> None:  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    builder = {"gemma3": gemma3_embedder, "xlmr": xlmr_embedder, "bert": bert_embedder}[family]
    folder = builder(tmp_path / "hub", layout="hub")
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"] for m in modules][:2] == [
        "sentence_transformers.models.Transformer",
        "sentence_transformers.models.Pooling",
    ]
    pooling = json.loads((folder / "1_Pooling/config.json").read_text())
    assert pooling[f"pooling_mode_{'cls_token' if EMBEDDERS[family].pooling == 'cls' else 'mean_tokens'}"] is True
    sbert = json.loads((folder / "sentence_bert_config.json").read_text())
    assert sbert == {"max_seq_length": EMBEDDERS[family].max_seq_length, "do_lower_case": False}
    assert "" not in json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"].values()
    hub = SentenceTransformer(str(folder), device="cpu")
    assert hub.max_seq_length == EMBEDDERS[family].max_seq_length
    np.testing.assert_allclose(hub.encode(TEXTS), st_models[family].encode(TEXTS), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Gemma3: bidirectional attention, prompts, Matryoshka, dtypes
# ---------------------------------------------------------------------------------------------


def _hidden_change_per_position(folder: Path, attn_implementation: str) -> np.ndarray:
    """Largest hidden-state change at each position when only the last content token changes."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", model_kwargs={"attn_implementation": attn_implementation})
    transformer = model[0]
    assert transformer.auto_model.config._attn_implementation == attn_implementation
    features = transformer.preprocess(["The cat is sleeping on the windowsill today"])
    ids = features["input_ids"]
    assert ids[0, -1].item() == model.tokenizer.eos_token_id
    changed = ids.clone()
    replacement = model.tokenizer.convert_tokens_to_ids("▁the")
    assert replacement != ids[0, -2].item()
    changed[0, -2] = replacement
    with torch.inference_mode():
        before = transformer({**features})["token_embeddings"]
        after = transformer({**features, "input_ids": changed})["token_embeddings"]
    return (before - after).abs().amax(dim=-1)[0].numpy()


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_gemma3_attention_is_bidirectional(tiny_gemma3_dir: Path, tmp_path: Path, attn_implementation: str) -> None:
    change = _hidden_change_per_position(tiny_gemma3_dir, attn_implementation)
    # Every earlier position (including <bos>) sees the later token.
    assert (change[:-2] > 1e-3).all(), change

    # Control: the same weights with causal attention leave earlier positions untouched, so the
    # check above really tells bidirectional from causal.
    causal = gemma3_embedder(tmp_path / "causal", bidirectional=False)
    causal_change = _hidden_change_per_position(causal, attn_implementation)
    assert (causal_change[:-2] < 1e-6).all(), causal_change
    assert causal_change[-2] > 1e-3


def test_gemma3_prompts_come_from_the_folder(st_models) -> None:  # type: ignore[no-untyped-def]
    model = st_models["gemma3"]
    assert model.prompts == GEMMA3_PROMPTS
    assert model.default_prompt_name is None
    text = SAMPLE_TEXTS["en"]
    plain = model.encode([text])[0]
    query = model.encode([text], prompt_name="query")[0]
    document = model.encode([text], prompt_name="document")[0]
    assert _cos(plain, query) < 0.99 and _cos(query, document) < 0.99
    # A prompt is a plain text prefix: the same as encoding the prefixed text.
    prefixed = model.encode([GEMMA3_PROMPTS["query"] + text])[0]
    np.testing.assert_allclose(query, prefixed, atol=1e-6)
    np.testing.assert_allclose(model.encode_query([text])[0], query, atol=1e-6)
    np.testing.assert_allclose(model.encode_document([text])[0], document, atol=1e-6)


def test_bert_e5_prompts_come_from_the_folder(st_models) -> None:  # type: ignore[no-untyped-def]
    model = st_models["bert"]
    text = SAMPLE_TEXTS["ru"]
    assert model.prompts["query"] == "query: " and model.prompts["passage"] == "passage: "
    query = model.encode([text], prompt_name="query")[0]
    passage = model.encode([text], prompt_name="passage")[0]
    assert _cos(query, model.encode([text])[0]) < 0.999 and _cos(query, passage) < 0.999


@pytest.mark.parametrize("dim", GEMMA3.matryoshka_dims[1:])
def test_gemma3_matryoshka_truncation(tiny_gemma3_dir: Path, st_models, dim: int) -> None:  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    full = st_models["gemma3"].encode(TEXTS)
    truncated = SentenceTransformer(str(tiny_gemma3_dir), device="cpu", truncate_dim=dim).encode(TEXTS)
    assert truncated.shape == (len(TEXTS), dim)
    np.testing.assert_allclose(truncated, full[:, :dim], atol=1e-6)  # truncated after Normalize
    assert not np.allclose(np.linalg.norm(truncated, axis=1), 1.0, atol=1e-3)  # so renormalizing is on the caller


def test_gemma3_runs_in_bfloat16_close_to_float32(tiny_gemma3_dir: Path, st_models) -> None:  # type: ignore[no-untyped-def]
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_gemma3_dir), device="cpu")
    model.to(torch.bfloat16)
    low = model.encode(TEXTS)
    high = st_models["gemma3"].encode(TEXTS)
    assert np.isfinite(low).all()
    assert min(_cos(a, b) for a, b in zip(low, high)) > 0.98


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------

_SPECIAL_AROUND = {
    "gemma3": ("<bos>", "<eos>"),
    "xlmr": ("<s>", "</s>"),
    "reranker": ("<s>", "</s>"),
    "bert": ("[CLS]", "[SEP]"),
}


@pytest.mark.parametrize("family", ["gemma3", "xlmr", "reranker", "bert"])
@pytest.mark.parametrize("lang", ["en", "ko", "ru"])
def test_tokenizer_round_trips_multilingual_text(tiny_model_dirs: TinyModelDirs, family: str, lang: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs[family])
    text = SAMPLE_TEXTS[lang]
    ids = tokenizer(text)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert (tokens[0], tokens[-1]) == _SPECIAL_AROUND[family]
    assert tokenizer.unk_token_id not in ids, tokens
    assert len(ids) - 2 < len(text), "the trained vocabulary should merge characters"
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    if family == "bert":  # uncased: lowercases and strips accents (Hangul decomposes into jamo)
        assert unicodedata.normalize("NFC", decoded) == text.lower()
    else:
        assert decoded == text


def test_gemma_tokenizer_falls_back_to_bytes(tiny_gemma3_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma3_dir)
    assert type(tokenizer).__name__ == "GemmaTokenizerFast"
    assert tokenizer.padding_side == "right"
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id) == (
        0,
        1,
        2,
        3,
    )
    text = "日本語 😀 and ünïcödé"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert "<0xF0>" in tokenizer.convert_ids_to_tokens(ids)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("family", ["gemma3", "xlmr", "reranker", "bert"])
def test_tokenizer_json_alone_matches_transformers(tiny_model_dirs: TinyModelDirs, family: str) -> None:
    """Servers that drive tokenizer.json with the `tokenizers` library get the same ids, specials included."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    folder = tiny_model_dirs[family]
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(folder)
    for text in TEXTS:
        assert raw.encode(text).ids == hf(text)["input_ids"]
    assert raw.encode("query", "document").ids == hf("query", "document")["input_ids"]


# ---------------------------------------------------------------------------------------------
# Reranker
# ---------------------------------------------------------------------------------------------


def test_reranker_scores_one_number_per_pair(tiny_reranker_dir: Path) -> None:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(tiny_reranker_dir), device="cpu")
    assert model.num_labels == 1
    assert model.max_seq_length == RERANKER.max_seq_length
    query = SAMPLE_TEXTS["en"]
    documents = [CORPUS[19], CORPUS[0], SAMPLE_TEXTS["ko"], SAMPLE_TEXTS["ru"]]
    pairs = [(query, doc) for doc in documents]
    scores = model.predict(pairs)
    assert scores.shape == (len(pairs),)
    assert np.isfinite(scores).all()
    assert ((scores > 0) & (scores < 1)).all()  # Sigmoid over the single logit by default
    assert np.ptp(scores) > 1e-4, "different documents should score differently"
    np.testing.assert_allclose(np.array([model.predict([pair])[0] for pair in pairs]), scores, atol=1e-5)
    ranked = model.rank(query, documents)
    assert sorted(r["corpus_id"] for r in ranked) == list(range(len(documents)))

    tokens = model.tokenizer.convert_ids_to_tokens(model.tokenizer("q", "d")["input_ids"])
    assert tokens[0] == "<s>" and tokens[-1] == "</s>" and tokens.count("</s>") == 3  # <s> q </s></s> d </s>
