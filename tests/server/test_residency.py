"""What stays in memory, decided without loading anything: the budget's evictions (least recently used idle
models first, the fewest that make room), a model larger than the whole budget, the weight-file estimate, and
the models file's `preload` / `keep_alive`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from embedserve.models.spec import ModelSpec
from embedserve.server.config.errors import ConfigError
from embedserve.server.config.models_file import load_models_file
from embedserve.server.serving.footprint import weight_bytes
from embedserve.server.serving.residency import ALWAYS, Residency, evictions, too_large


def test_what_fits_already_unloads_nothing() -> None:
    assert evictions(need=10, budget=100, held=90, idle=[("a", 50)]) == []


def test_the_least_recently_used_idle_models_go_first_and_no_more_than_make_room() -> None:
    idle = [("oldest", 30), ("older", 30), ("newest", 30)]
    assert evictions(need=40, budget=100, held=90, idle=idle) == ["oldest"]
    assert evictions(need=60, budget=100, held=90, idle=idle) == ["oldest", "older"]


def test_room_held_by_models_in_use_is_not_taken() -> None:
    """90 held, of which only 30 by an idle model: 70 more cannot be made room for now (the host waits)."""
    assert evictions(need=70, budget=100, held=90, idle=[("idle", 30)]) is None


def test_a_model_larger_than_the_whole_budget_is_refused_with_both_sizes() -> None:
    assert too_large("small", 2**20, 2**20) is None
    error = too_large("big", 3 * 2**20, 2**20)
    assert error is not None and not error.retry
    assert str(error) == (
        "model 'big' needs about 3.0 MiB (its weight files) and the server's model memory budget "
        "(EMBEDSERVE_MODEL_MEMORY_BYTES) is 1.0 MiB: it cannot be loaded here"
    )


def test_the_estimate_is_the_weight_files_the_backend_loads(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x" * 900)  # the same weights again: not counted twice
    (tmp_path / "sparse_linear.pt").write_bytes(b"x" * 10)  # a head: loaded beside the encoder
    (tmp_path / "tokenizer.json").write_bytes(b"x" * 5000)  # not weights
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"x" * 1100)
    (tmp_path / "onnx" / "model_int8.onnx").write_bytes(b"x" * 300)

    def spec(backend: str) -> ModelSpec:
        return ModelSpec(id="m", source=str(tmp_path), backend=backend)

    assert weight_bytes(spec("torch")) == 1010
    assert weight_bytes(spec("auto")) == 1010  # its export holds the same weights
    assert weight_bytes(spec("onnx")) == 1110
    assert weight_bytes(spec("onnx-int8")) == 310
    assert weight_bytes(ModelSpec(id="hub", source="org/not-downloaded", backend="torch")) == 0


def test_entries_say_when_they_are_in_memory_and_their_specs_never_see_it(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    entries = [
        {"id": "lazy", "source": "org/a", "kind": "embed", "backend": "torch", "preload": False, "keep_alive": 300},
        {"id": "kept", "source": "org/b", "kind": "embed", "backend": "torch"},
    ]
    path.write_text(yaml.safe_dump({"models": entries}))
    lazy, kept = load_models_file(path)
    assert lazy.residency() == Residency(preload=False, keep_alive=300)
    assert kept.residency() == ALWAYS == Residency(preload=True, keep_alive=None)
    assert "preload" not in lazy.spec().model_fields_set and not hasattr(lazy.spec(), "keep_alive")


def test_a_negative_keep_alive_is_named(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [{"id": "m", "source": "org/a", "keep_alive": -1}]}))
    with pytest.raises(ConfigError, match="keep_alive"):
        load_models_file(path)
