"""The YAML models file: what it accepts, and how a bad one is reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from embedserve.batching.config import BatchingConfig
from embedserve.server.app import served_models
from embedserve.server.config.errors import ConfigError
from embedserve.server.config.models_file import load_models_file
from embedserve.server.config.settings import Settings
from tests.support import ROOT


def test_the_documented_example_is_valid() -> None:
    entries = load_models_file(ROOT / "models.example.yaml")
    defaults = BatchingConfig()
    assert [e.id for e in entries] == [
        "all-MiniLM-L6-v2",
        "embeddinggemma",
        "bge-m3",
        "multilingual-e5",
        "bge-reranker",
        "qwen3-reranker",
        "minilm-int8",
        "bge-m3-fleet",
        "gpt-4o-mini",
    ]
    assert entries[7].protocol == "tei" and entries[8].serves == ("chat", "completions", "embed")
    assert entries[6].spec().backend == "onnx-int8"
    assert entries[4].spec().kind == "rerank"
    assert entries[5].spec().template == "qwen3-reranker"
    assert entries[1].batching_config(defaults).max_batch_tokens == 8192
    assert entries[1].spec().prompts["query"].startswith("task: search result")


def test_only_id_and_source_are_required(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("models:\n  - id: a\n    source: /x\n")
    (entry,) = load_models_file(path)
    assert entry.spec().kind == "embed" and entry.spec().backend == "auto"
    path.write_text("models:\n  - id: a\n")
    with pytest.raises(ConfigError, match="source"):
        load_models_file(path)


def test_an_entry_without_backend_or_kind_is_read_off_its_folder_as_model_does(
    tmp_path: Path, minilm_int8: Path, tiny_bert_reranker_dir: Path
) -> None:
    """An `embedserve quantize` folder listed as `--model` would take it: ONNX INT8 (it failed to start as torch);
    a cross-encoder folder is a reranker. What an entry says still wins."""
    from tests.inprocess import start_app

    path = tmp_path / "m.yaml"
    path.write_text(
        f"models:\n  - id: int8\n    source: {minilm_int8}\n  - id: fp32\n    source: {minilm_int8}\n"
        f"    backend: onnx\n  - id: ce\n    source: {tiny_bert_reranker_dir}\n"
    )
    int8, fp32, ce = (entry.spec() for entry in load_models_file(path))
    assert (int8.backend, fp32.backend, ce.kind, ce.backend) == ("onnx-int8", "onnx", "rerank", "auto")
    served = start_app(tmp_path, "--models", str(path))
    try:
        cards = {card["id"]: card for card in served.http.get("/v1/models").json()["data"]}
        assert (cards["int8"]["backend"], cards["int8"]["dtype"], cards["int8"]["status"]) == (
            "onnx-int8",
            "int8",
            "loaded",
        )
        answer = served.http.post("/v1/embeddings", json={"model": "int8", "input": "hello"})
        assert answer.status_code == 200 and len(answer.json()["data"][0]["embedding"]) == 384
    finally:
        served.stop()


def test_errors_name_the_file_the_entry_and_the_field_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "models:\n  - id: a\n    source: /x\n  - id: b\n    source: /y\n    backend: tensorrt\n  - kind: embed\n"
        "  - id: up\n    kind: upstream\n    protocol: grpc\n    endpoints: [http://127.0.0.1:9]\n"
    )
    with pytest.raises(ConfigError) as error:
        load_models_file(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "entry 2 ('b'), backend: unknown backend 'tensorrt'; known: torch, onnx, onnx-int8" in message
    assert "entry 3, source: Field required" in message and "entry 3, id: Field required" in message
    assert "entry 4 ('up'), protocol:" in message
    assert "pydantic" not in message and "local" not in message


def test_file_entries_and_flags_combine_and_server_defaults_fill_gaps(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("models:\n  - id: a\n    source: /x\n    dtype: bfloat16\n    batching: {max_wait_ms: 0}\n")
    settings = Settings(models_file=path, models=["b=/y"], dtype="float32", max_wait_ms=5)
    (a, a_batching), (b, b_batching) = served_models(settings)
    assert (a.id, a.dtype, a_batching.max_wait_ms) == ("a", "bfloat16", 0)
    assert (b.id, b.dtype, b_batching.max_wait_ms) == ("b", "float32", 5)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("models: []\n", "at least 1"),
        ("models:\n  - id: a\n    source: /x\n    kind: generate\n", "kind"),
        ("models:\n  - id: a\n    source: /x\n    batching: {max_batch_tokens: -1}\n", "max_batch_tokens"),
        ("models:\n  - id: a\n    source: /x\n  - id: a\n    source: /y\n", "used by both"),
        ("models: [\n", "expected"),
    ],
)
def test_a_bad_file_stops_the_cli_with_a_clear_message(tmp_path: Path, content: str, complaint: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "embedserve.server", "serve", "--models", str(path), "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "configuration error" in result.stderr and complaint in result.stderr


def test_an_entrys_own_token_budget_counts_as_set_and_the_server_default_does_not(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "models:\n  - id: a\n    source: /x\n  - id: b\n    source: /y\n    batching: {max_batch_tokens: 16384}\n"
    )
    a, b = load_models_file(path)
    defaults = Settings().batching()
    assert a.batching_config(defaults).for_device("cpu", 4096).max_batch_tokens == 4096
    assert b.batching_config(defaults).for_device("cpu", 4096).max_batch_tokens == 16384
    server_wide = Settings(max_batch_tokens=8192).batching()
    assert a.batching_config(server_wide).for_device("cpu", 4096).max_batch_tokens == 8192
