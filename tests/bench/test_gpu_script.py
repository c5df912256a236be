"""`python -m bench.gpu` runs end to end on a CPU with tiny models, and its real-size models are the real sizes."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from bench import gpu, gpu_models

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_small_cpu_run_writes_json_and_markdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two families, the runner compiled (dynamo's eager backend: the mechanism, in seconds)."""
    import torch

    monkeypatch.setenv("EMBEDSERVE_COMPILE_BACKEND", "eager")
    monkeypatch.delenv("EMBEDSERVE_COMPILE_LENGTHS", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; a busy second core only slows them down
    try:
        result = gpu.main(
            ["--out", str(tmp_path), "--device", "cpu", "--small", "--models", "minilm-l12,embeddinggemma-300m"]
            + ["--compile", "on", "--seconds", "0.05", "--seq", "16", "--max-length", "16"]
        )
    finally:
        torch.set_num_threads(threads)
    assert "EMBEDSERVE_COMPILE_LENGTHS" not in os.environ  # the variants leave no trace for later tests
    (written,) = tmp_path.glob("gpu-*.json")
    assert json.loads(written.read_text()) == result
    table = written.with_suffix(".md").read_text()
    assert table.count("\n| minilm-l12 |") == 3  # raw, runner static, runner dynamic
    for key in ("minilm-l12", "embeddinggemma-300m"):
        entry = result["models"][key]
        assert set(entry["raw"]) == {"eager", "sdpa", "sdpa+compile"}
        assert all(v["tokens_per_s"] > 0 for v in entry["raw"].values())
        assert set(entry["runner"]) == {"static", "dynamic"}
        for runner in entry["runner"].values():
            assert runner["compiled"] and runner["length_buckets"] == 1 and runner["eager_batches"] == 0
            assert runner["tokens_per_s"] > 0
            assert runner["parity"]["min_cosine"] > 0.9999  # float32 on both sides here


@pytest.mark.parametrize(
    ("key", "parameters"),
    [("minilm-l12", 33_360_000), ("bge-m3", 567_754_752), ("embeddinggemma-300m", 302_863_104)],
)
def test_real_size_configs_have_the_published_parameter_counts(key: str, parameters: int) -> None:
    """The transformer alone (bge-m3: 568M; EmbeddingGemma: 308M with its two Dense layers)."""
    import torch
    from transformers import AutoModel

    family = gpu_models.FAMILIES[key]
    with torch.device("meta"):  # shapes only, no memory
        model = AutoModel.from_config(family.config(family.tokenizer()))
    assert sum(p.numel() for p in model.parameters()) == parameters


def test_a_real_size_build_writes_a_loadable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real-size writer (bf16 weights, Dense layers, Gemma's sliding window), on a shrunken config."""
    from sentence_transformers import SentenceTransformer

    real = gpu_models.FAMILIES["embeddinggemma-300m"]

    def shrunk(tokenizer):  # type: ignore[no-untyped-def]
        config = real.config(tokenizer)
        config.update({"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64})
        config.update({"num_hidden_layers": 2, "head_dim": 16, "query_pre_attn_scalar": 16})
        config.layer_types = config.layer_types[:2]
        return config

    family = dataclasses.replace(real, hidden=32, dense=(64, 32), config=shrunk)
    monkeypatch.setitem(gpu_models.FAMILIES, "embeddinggemma-300m", family)
    folder = gpu_models.build("embeddinggemma-300m", tmp_path / "g", max_length=64)
    config = json.loads((folder / "config.json").read_text())
    assert config["sliding_window"] == 512 and config["dtype"] == "bfloat16"
    model = SentenceTransformer(str(folder), device="cpu")
    assert model.max_seq_length == 64
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Dense", "Dense", "Normalize"]
    assert model[0].auto_model.config.sliding_window == 257  # what transformers makes of EmbeddingGemma's 512
    assert model.encode(["hello there"]).shape == (1, 32)
