"""`backend: auto`: a model folder served on the CPU through its ONNX fp32 export, made once (verified against
PyTorch to a cosine of 0.99999 per token and text), cached by the folder's content, and PyTorch where it cannot be,
saying why."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from embedserve.models.loading import load_model
from embedserve.models.spec import ModelSpec
from embedserve.quantize.served_export import resolve_backend
from tests.fixtures.tiny_models import SAMPLE_TEXTS
from tests.support import cosine_rows

TEXTS = [*SAMPLE_TEXTS.values(), "short", "a much longer sentence about libraries " * 30]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("EMBEDSERVE_CACHE_DIR", str(folder))
    return folder


def test_a_cpu_folder_is_served_from_its_verified_export_made_once(
    cache: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spec = ModelSpec(id="bert", source=str(tiny_bert_dir), backend="auto", device="cpu")
    with caplog.at_level(logging.INFO, "embedserve.models"):
        resolved = resolve_backend(spec)
    assert resolved.backend == "onnx" and Path(resolved.source).parent == cache / "onnx"
    assert "exporting to ONNX fp32 once" in caplog.text and "exported to ONNX fp32" in caplog.text
    onnx = load_model(resolved).model
    torch = load_model(spec.model_copy(update={"backend": "torch"})).model
    assert onnx.info.backend == "onnx"
    got, want = onnx.runner.run(onnx.tokenize(TEXTS)), torch.runner.run(torch.tokenize(TEXTS))
    assert cosine_rows(got, want).min() >= 0.99999

    def no_second_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr("embedserve.quantize.export.export", no_second_export)

    def read_only(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr("filelock.FileLock", read_only)  # a made export is served without writing a lock
    caplog.clear()
    with caplog.at_level(logging.INFO, "embedserve.models"):
        assert resolve_backend(spec) == resolved
    assert "using the cached ONNX export" in caplog.text
    assert [p.name for p in (cache / "onnx").iterdir() if p.is_dir()] == [Path(resolved.source).name]  # no partials


def test_the_padded_and_packed_graphs_of_an_export_read_one_copy_of_the_weights(
    cache: Path, tiny_bert_dir: Path
) -> None:
    import onnx

    folder = Path(resolve_backend(ModelSpec(id="bert", source=str(tiny_bert_dir), device="cpu")).source)
    assert sorted(p.name for p in folder.glob("*onnx*")) == ["model.onnx", "model_packed.onnx", "weights.onnx.data"]
    read: dict[str, set[tuple[str, ...]]] = {}
    for graph in ("model.onnx", "model_packed.onnx"):
        proto = onnx.load(str(folder / graph), load_external_data=False)
        external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        read[graph] = {tuple(e.value for e in t.external_data) for t in external}
        assert {places[0] for places in read[graph]} == {"weights.onnx.data"}
    assert read["model_packed.onnx"] <= read["model.onnx"], "the packed graph reads the padded graph's weights"
    stored = sum(int(places[2]) for places in read["model.onnx"])
    assert stored <= (folder / "weights.onnx.data").stat().st_size < stored + 4096 * len(read["model.onnx"])
    packed = load_model(ModelSpec(id="p", source=str(folder), backend="onnx")).model
    padded = load_model(ModelSpec(id="q", source=str(folder), backend="onnx", packing="off")).model
    assert packed.runner._onnx.packed and not padded.runner._onnx.packed
    np.testing.assert_allclose(
        packed.runner.run(packed.tokenize(TEXTS)), padded.runner.run(padded.tokenize(TEXTS)), atol=1e-5
    )


def test_a_changed_folder_gets_an_export_of_its_own(cache: Path, tiny_bert_dir: Path, tmp_path: Path) -> None:
    first = resolve_backend(ModelSpec(id="a", source=str(tiny_bert_dir), backend="auto", device="cpu"))
    edited = shutil.copytree(tiny_bert_dir, tmp_path / "edited")
    config = edited / "config_sentence_transformers.json"
    config.write_text(config.read_text().replace("{", '{"note": "edited",', 1))
    second = resolve_backend(ModelSpec(id="b", source=str(edited), backend="auto", device="cpu"))
    assert first.source != second.source and second.backend == "onnx"


def test_what_cannot_be_exported_is_served_by_torch_saying_why(
    cache: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from embedserve.quantize.pipeline import ExportError

    def refuse(*args: object, **kwargs: object) -> None:
        raise ExportError("ONNX output differs from PyTorch: min token cosine 0.9")

    monkeypatch.setattr("embedserve.quantize.export.export", refuse)
    spec = ModelSpec(id="bert", source=str(tiny_bert_dir), backend="auto", device="cpu")
    with caplog.at_level(logging.INFO, "embedserve.models"):
        assert resolve_backend(spec).backend == "torch"
        assert resolve_backend(spec.model_copy(update={"kind": "classify"})).backend == "torch"
        assert resolve_backend(spec.model_copy(update={"device": "cuda"})).backend == "torch"
        assert resolve_backend(spec.model_copy(update={"source": "org/not-a-folder"})).backend == "torch"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("serving with torch")]
    assert "serving with torch: the ONNX export failed (ExportError: ONNX output differs" in lines[0]
    assert "not classify" in lines[1] and "device 'cuda'" in lines[2] and "not a local folder" in lines[3]
    assert not any(p.is_dir() for p in (cache / "onnx").iterdir())  # nothing half-made is left to load


def test_a_quantize_folder_keeps_its_own_graphs_backend(cache: Path, minilm_int8: Path) -> None:
    spec = ModelSpec(id="int8", source=str(minilm_int8), backend="auto")
    assert resolve_backend(spec) == spec.model_copy(update={"backend": "onnx-int8"})


def test_a_models_file_entry_with_backend_auto_serves_onnx(cache: Path, tiny_bert_dir: Path, tmp_path: Path) -> None:
    from tests.inprocess import start_app

    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models": [{"id": "bert", "source": str(tiny_bert_dir), "backend": "auto"}]}))
    served = start_app(tmp_path, "--models", str(models), env={"EMBEDSERVE_CACHE_DIR": str(cache)})
    try:
        (card,) = served.http.get("/v1/models").json()["data"]
        assert (card["backend"], card["dtype"], card["status"]) == ("onnx", "float32", "loaded")
        answer = served.http.post("/v1/embeddings", json={"model": "bert", "input": TEXTS[:3]})
        assert answer.status_code == 200, answer.text
        torch = load_model(ModelSpec(backend="torch", id="t", source=str(tiny_bert_dir), device="cpu")).model
        want = torch.finish(torch.runner.run(torch.tokenize(TEXTS[:3])))
        got = np.array([d["embedding"] for d in answer.json()["data"]])
        assert cosine_rows(got, want).min() >= 0.99999
    finally:
        served.stop()


def test_embedserve_prepare_makes_the_exports_and_exits(tmp_path: Path, tiny_bert_dir: Path) -> None:
    """What an image's build step runs: with serve's flags, each model's backend resolved (exported once), a line
    each, exit 0, no port bound."""
    import os
    import subprocess
    import sys

    command = [str(Path(sys.executable).parent / "embedserve"), "prepare", "--model", f"bert={tiny_bert_dir}"]
    env = {**os.environ, "EMBEDSERVE_CACHE_DIR": str(tmp_path / "cache"), "EMBEDSERVE_PORT": "1"}  # port 1: unbindable
    for _ in range(2):  # the second finds the export made by the first
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        (line,) = done.stdout.splitlines()
        assert line.startswith(f"bert: onnx from {tmp_path / 'cache' / 'onnx'}")
    assert "using the cached ONNX export" in done.stderr
