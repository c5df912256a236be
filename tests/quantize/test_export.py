"""export_model on every tiny family: the folder contract, and parity with PyTorch checked here
independently of the exporter's own verification (onnxruntime fed by the HF tokenizer saved in the
folder, pooling re-implemented below)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.tiny_models import SAMPLE_TEXTS, bert_embedder, gemma3_embedder

TEXTS = [*SAMPLE_TEXTS.values(), "short", "Москва — столица России. " * 40, "서울은 한국의 수도입니다. " * 30]
PAIRS = [
    ("what is the capital of the United Kingdom?", "London is the capital of the United Kingdom."),
    ("서울은 어디인가요?", "서울은 한국의 수도입니다."),
    ("Где Москва?", "Москва — столица России."),
    ("coffee", "I drink coffee every morning before work. " * 60),
]
CONFIG_KEYS = {
    "format",
    "kind",
    "model_type",
    "max_length",
    "pad_id",
    "with_type_ids",
    "truncation_side",
    "vocab_size",
    "pooling",
    "dense",
    "normalize",
    "dimension",
    "num_labels",
    "prompts",
    "default_prompt",
    "files",
}
EMBEDDERS = {"bert": "tiny_bert_dir", "xlmr": "tiny_xlmr_dir", "gemma3": "tiny_gemma3_dir"}
EMBEDDERS |= {"modernbert": "tiny_modernbert_dir", "qwen3": "tiny_qwen3_dir"}
PACKED = {"bert", "xlmr"}
"""The families exported with a packed graph beside model.onnx."""
RERANKERS = {"reranker": "tiny_reranker_dir", "bert_reranker": "tiny_bert_reranker_dir"}
RERANKERS["bert_reranker_2"] = "tiny_bert_reranker_2_dir"

_exports: dict[tuple[str, str], Path] = {}


def exported(request: pytest.FixtureRequest, family: str, exporter: str = "auto") -> tuple[Path, Path]:
    """(source folder, export folder), exported once per session per family and exporter."""
    from embedserve.quantize.export import export_model

    fixture = {**EMBEDDERS, **RERANKERS}[family]
    source: Path = request.getfixturevalue(fixture)
    key = (family, exporter)
    if key not in _exports:
        out = request.getfixturevalue("tmp_path_factory").mktemp(f"onnx-{family}-{exporter}")
        _exports[key] = export_model(source, out, exporter=exporter)  # type: ignore[arg-type]
    return source, _exports[key]


def ort_outputs(folder: Path, features: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v.astype(np.int64) for k, v in features.items() if k in names})[0]


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    if mode == "cls":
        return hidden[:, 0]
    if mode == "lasttoken":  # the last real token, wherever the padding went (Qwen3's tokenizer pads left)
        last = hidden.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
        return hidden[np.arange(len(hidden)), last]
    assert mode == "mean", mode
    m = mask[..., None].astype(np.float32)
    return (hidden * m).sum(1) / m.sum(1)


def onnx_embed(folder: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoTokenizer

    config = json.loads((folder / "embedserve.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    features = dict(
        tokenizer(texts, padding=True, truncation=True, max_length=config["max_length"], return_tensors="np")
    )
    x = pool(ort_outputs(folder, features), features["attention_mask"], config["pooling"]["mode"])
    for entry in config["dense"]:
        with np.load(folder / entry["file"]) as arrays:
            x = x @ arrays["weight"].T + (arrays["bias"] if "bias" in arrays.files else 0)
        assert entry["activation"] == "identity"
    if config["normalize"]:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("family", sorted(EMBEDDERS))
def test_embedder_export_matches_sentence_transformers(request: pytest.FixtureRequest, family: str) -> None:
    from sentence_transformers import SentenceTransformer

    source, folder = exported(request, family)
    reference = SentenceTransformer(str(source), device="cpu")
    want = reference.encode(TEXTS, convert_to_numpy=True)
    got = onnx_embed(folder, TEXTS)
    assert cosines(got, want).min() >= 0.9999

    config = json.loads((folder / "embedserve.json").read_text())
    assert set(config) == CONFIG_KEYS
    assert config["format"] == 1 and config["kind"] == "embed" and config["num_labels"] is None
    assert config["dimension"] == want.shape[1] == reference.get_embedding_dimension()
    assert config["model_type"] == reference[0].auto_model.config.model_type
    packed = {"packed": "model_packed.onnx"} if family in PACKED else {}
    assert config["files"] == {"fp32": "model.onnx", "int8": None, **packed}
    assert config["with_type_ids"] is ("token_type_ids" in reference.tokenizer.model_input_names)
    if packed:  # several texts a row (quantize.packed_graph), verified as model.onnx is
        manifest = json.loads((folder / "manifest.json").read_text())
        from embedserve.quantize.onnx_eval import ExportedModel
        from embedserve.quantize.verify import MIN_COSINE

        assert manifest["packed"]["verification"]["min_token_cosine"] >= MIN_COSINE
        assert cosines(ExportedModel(folder, "model_packed.onnx").embed(TEXTS), want).min() >= 0.9999

    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "manifest.json"):
        assert (folder / name).is_file(), name


def test_folder_settings_come_from_the_folders(request: pytest.FixtureRequest) -> None:
    bert = json.loads((exported(request, "bert")[1] / "embedserve.json").read_text())
    assert bert["pooling"] == {"mode": "mean", "include_prompt": True}
    assert bert["prompts"] == {"query": "query: ", "passage": "passage: "} and bert["default_prompt"] is None
    assert bert["with_type_ids"] is True and bert["dense"] == [] and bert["normalize"] is True

    xlmr = json.loads((exported(request, "xlmr")[1] / "embedserve.json").read_text())
    assert xlmr["pooling"]["mode"] == "cls" and xlmr["with_type_ids"] is False
    assert xlmr["max_length"] == 512  # max_position_embeddings 514 - 2 for XLM-R
    assert xlmr["pad_id"] == 1

    gemma = json.loads((exported(request, "gemma3")[1] / "embedserve.json").read_text())
    assert gemma["model_type"] == "gemma3_text"
    assert gemma["dense"] == [
        {"file": "dense_0.npz", "activation": "identity"},
        {"file": "dense_1.npz", "activation": "identity"},
    ]
    with np.load(exported(request, "gemma3")[1] / "dense_0.npz") as arrays:
        assert arrays["weight"].shape == (256, 64) and "bias" not in arrays.files
    assert gemma["prompts"]["query"] == "task: search result | query: "


def _first_token_moves(folder: Path, ids: list[int], other_last: int) -> float:
    """How much position 0's hidden state changes when only the last token changes."""
    a = np.array([ids], dtype=np.int64)
    b = a.copy()
    b[0, -1] = other_last
    mask = np.ones_like(a)
    ha, hb = (
        ort_outputs(folder, {"input_ids": a, "attention_mask": mask}),
        ort_outputs(folder, {"input_ids": b, "attention_mask": mask}),
    )
    return float(np.abs(ha[0, 0] - hb[0, 0]).max())


def test_gemma3_graph_attends_both_ways(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """EmbeddingGemma is bidirectional: the exported graph must let the first token see the last.
    A causal control (same weights, causal attention) shows the probe can tell the difference, and
    the exporter's verification refuses a causal graph in a bidirectional folder."""
    from sentence_transformers import SentenceTransformer

    from embedserve.quantize.export import export_model
    from embedserve.quantize.pipeline import ExportError
    from embedserve.quantize.verify import verify_embedder

    _, folder = exported(request, "gemma3")
    ids = [2, 40, 41, 42, 43, 44, 1]
    assert _first_token_moves(folder, ids, 45) > 1e-4

    causal = export_model(gemma3_embedder(tmp_path / "causal-src", bidirectional=False), tmp_path / "causal")
    assert _first_token_moves(causal, ids, 45) < 1e-6

    swapped = tmp_path / "swapped"
    shutil.copytree(folder, swapped)
    shutil.copy(causal / "model.onnx", swapped / "model.onnx")
    source = request.getfixturevalue("tiny_gemma3_dir")
    with pytest.raises(ExportError, match="differs from PyTorch"):
        verify_embedder(swapped, SentenceTransformer(str(source), device="cpu"), [TEXTS])


@pytest.mark.parametrize("family", sorted(RERANKERS))
def test_reranker_export_matches_cross_encoder(request: pytest.FixtureRequest, family: str) -> None:
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer

    source, folder = exported(request, family)
    config = json.loads((folder / "embedserve.json").read_text())
    assert set(config) == CONFIG_KEYS | {"labels"}  # a reranker's label names (TEI's /info)
    assert config["kind"] == "rerank" and config["pooling"] is None and config["dense"] == []
    model = CrossEncoder(str(source), device="cpu")
    assert config["num_labels"] == config["dimension"] == model.num_labels

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    features = dict(
        tokenizer(
            [q for q, _ in PAIRS],
            [d for _, d in PAIRS],
            padding=True,
            truncation=True,
            max_length=config["max_length"],
            return_tensors="np",
        )
    )
    got = ort_outputs(folder, features)
    want = np.asarray(model.predict(PAIRS, activation_fn=torch.nn.Identity())).reshape(got.shape)
    assert got.shape == (len(PAIRS), model.num_labels)
    assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("family", ["gemma3", "xlmr", "bert_reranker_2"])
def test_torch_fallback_exports_every_family(request: pytest.FixtureRequest, family: str) -> None:
    """The fallback for families optimum cannot export: torch.onnx on the HF model itself."""
    _, folder = exported(request, family, exporter="torch")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["export"]["exporter"] == "torch"
    verification = manifest["export"]["verification"]
    if "min_cosine" in verification:
        assert verification["min_cosine"] >= 0.9999 and verification["min_token_cosine"] >= 0.9999
    else:
        assert verification["max_abs_diff"] <= 1e-4
    if family == "gemma3":
        assert verification["longest_tokens"] > 257  # past the sliding window
        assert _first_token_moves(folder, [2, 40, 41, 42, 43, 44, 1], 45) > 1e-4


def _save(tmp_path: Path, modules: list[Any]) -> Path:
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(modules=modules, device="cpu").save(str(tmp_path), create_model_card=False)
    return tmp_path


def test_dense_with_bias_and_activation_round_trips(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    from embedserve.quantize.export import export_model
    from embedserve.quantize.onnx_eval import ExportedModel

    source = request.getfixturevalue("tiny_bert_dir")
    torch.manual_seed(3)
    folder = _save(
        tmp_path / "src",
        [
            Transformer(str(source)),
            Pooling(32, pooling_mode="max"),
            Dense(32, 24, bias=True, activation_function=torch.nn.Tanh()),
            Dense(24, 16, bias=True, activation_function=torch.nn.GELU()),
        ],
    )
    out = export_model(folder, tmp_path / "out")
    config = json.loads((out / "embedserve.json").read_text())
    assert config["pooling"]["mode"] == "max" and config["normalize"] is False and config["dimension"] == 16
    assert [d["activation"] for d in config["dense"]] == ["tanh", "gelu"]
    with np.load(out / "dense_0.npz") as arrays:
        assert arrays["weight"].shape == (24, 32) and arrays["bias"].shape == (24,)
    want = SentenceTransformer(str(folder), device="cpu").encode(TEXTS)
    assert cosines(ExportedModel(out).embed(TEXTS), want).min() >= 0.9999


def test_unsupported_module_is_refused_not_dropped(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from sentence_transformers.sentence_transformer.modules import LayerNorm, Pooling, Transformer

    from embedserve.quantize.export import export_model
    from embedserve.quantize.pipeline import ExportError

    source = request.getfixturevalue("tiny_bert_dir")
    folder = _save(tmp_path / "src", [Transformer(str(source)), Pooling(32), LayerNorm(32)])
    with pytest.raises(ExportError, match="LayerNorm"):
        export_model(folder, tmp_path / "out")


def test_hub_layout_folder_exports(tmp_path: Path) -> None:
    """Published folders (legacy module types and pooling keys) export the same way."""
    from embedserve.quantize.export import export_model

    out = export_model(bert_embedder(tmp_path / "src", layout="hub"), tmp_path / "out")
    config = json.loads((out / "embedserve.json").read_text())
    assert config["pooling"] == {"mode": "mean", "include_prompt": True} and config["max_length"] == 256


def test_failed_verification_tries_both_exporters_and_leaves_nothing(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """An unreachable parity bar makes every exporter fail: the error names both, and the folder
    holds no graph or config a server could load."""
    from embedserve.quantize.export import export
    from embedserve.quantize.pipeline import ExportError

    out = tmp_path / "out"
    with pytest.raises(ExportError, match="optimum: .*torch: "):
        export(request.getfixturevalue("tiny_bert_dir"), out, min_cosine=1.5)
    assert not (out / "model.onnx").exists() and not (out / "embedserve.json").exists()
