"""bge-m3's extra heads travel with an export: an ONNX folder (fp32 or INT8) written by `embedserve quantize`
serves the same lexical weights and multi-vector rows as the torch runner on the original folder, torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedserve.models.backend import MULTIVECTOR, SPARSE
from embedserve.models.embedder import Embedder
from embedserve.models.heads import LinearHead, colbert_rows, lexical_weights
from embedserve.models.loading import load_model
from embedserve.models.spec import ModelSpec
from embedserve.models.types import Tokens
from tests.fixtures.tiny_models import SAMPLE_TEXTS
from tests.support import cosine_rows

TEXTS = [*SAMPLE_TEXTS.values(), "short short short", "a much longer sentence about libraries " * 40]


@pytest.fixture(scope="module")
def bge_m3_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_bge_m3_dir: Path) -> Path:
    from embedserve.quantize.export import export_model

    return export_model(tiny_bge_m3_dir, tmp_path_factory.mktemp("bge-m3-onnx"), kind="embed")


def test_the_export_lists_both_heads_and_the_ids_lexical_weights_leave_out(bge_m3_onnx: Path) -> None:
    heads = json.loads((bge_m3_onnx / "embedserve.json").read_text())["heads"]
    assert heads["sparse"]["file"] == "sparse_linear.npz" and heads["multivector"]["file"] == "colbert_linear.npz"
    assert heads["sparse"]["unused_ids"] == [0, 1, 2, 3]  # XLM-R's <s>, <pad>, </s>, <unk>
    assert (bge_m3_onnx / "sparse_linear.npz").is_file() and (bge_m3_onnx / "colbert_linear.npz").is_file()


def test_onnx_serves_both_heads_as_torch_does(bge_m3: Embedder, bge_m3_onnx: Path) -> None:
    onnx = load_model(ModelSpec(id="bge-m3", source=str(bge_m3_onnx), backend="onnx")).model
    assert SPARSE in onnx.runner.outputs and MULTIVECTOR in onnx.runner.outputs
    assert onnx.info.output_widths == bge_m3.info.output_widths == {MULTIVECTOR: 32}
    tokens = bge_m3.tokenize(TEXTS)
    assert [t.ids for t in onnx.tokenize(TEXTS)] == [t.ids for t in tokens]
    for got, want in zip(onnx.runner.outputs[SPARSE](tokens), bge_m3.runner.outputs[SPARSE](tokens)):
        assert got.indices.tolist() == want.indices.tolist()
        np.testing.assert_allclose(got.values, want.values, atol=1e-5)
    for got, want in zip(onnx.runner.outputs[MULTIVECTOR](tokens), bge_m3.runner.outputs[MULTIVECTOR](tokens)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_folder_without_heads_declares_none(tmp_path_factory: pytest.TempPathFactory, tiny_xlmr_dir: Path) -> None:
    from embedserve.quantize.export import export_model

    out = export_model(tiny_xlmr_dir, tmp_path_factory.mktemp("xlmr-onnx"), kind="embed")
    assert "heads" not in json.loads((out / "embedserve.json").read_text())
    runner = load_model(ModelSpec(id="xlmr", source=str(out), backend="onnx")).model.runner
    assert SPARSE not in runner.outputs and MULTIVECTOR not in runner.outputs


def test_int8_serves_both_heads_close_to_fp32(bge_m3: Embedder, tiny_bge_m3_dir: Path, tmp_path: Path) -> None:
    """`embedserve quantize` keeps the heads: the INT8 graph's hidden state feeds the same float32 heads. (Forced:
    a random-weight model's INT8 may miss the gate.)"""
    from embedserve.quantize.build import Options, quantize_model

    out = tmp_path / "int8"
    quantize_model(tiny_bge_m3_dir, out, Options(force=True, bench_seconds=0, progress=False))
    int8 = load_model(ModelSpec(id="bge-m3", source=str(out), backend="onnx-int8")).model
    tokens = bge_m3.tokenize(TEXTS)
    for got, want in zip(int8.runner.outputs[MULTIVECTOR](tokens), bge_m3.runner.outputs[MULTIVECTOR](tokens)):
        assert got.shape == want.shape and cosine_rows(got, want).min() > 0.99
    sparse = int8.runner.outputs[SPARSE](tokens)
    assert len(sparse) == len(TEXTS) and all((v.values > 0).all() for v in sparse)


def test_the_onnx_heads_import_no_torch(bge_m3_onnx: Path) -> None:
    """What the torch-free image runs: the ONNX runner with both heads, torch made unimportable."""
    script = f"""
import sys
sys.modules["torch"] = None
from embedserve.models.backend import MULTIVECTOR, SPARSE
from embedserve.models.loading import load_model
from embedserve.models.spec import ModelSpec
model = load_model(ModelSpec(id="m", source={str(bge_m3_onnx)!r}, backend="onnx")).model
tokens = model.tokenize(["hello world"])
rows = model.runner.outputs[MULTIVECTOR](tokens)[0]
sparse = model.runner.outputs[SPARSE](tokens)[0]
print(rows.shape[0], len(sparse.indices) > 0)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(tokens_of(bge_m3_onnx)) - 1), "True"]


def tokens_of(folder: Path) -> list[int]:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json")).encode("hello world").ids


def test_lexical_weights_keep_each_ids_largest_weight_and_drop_the_unused() -> None:
    batch = [Tokens([0, 7, 9, 7, 2]), Tokens([0, 5, 2])]
    weights = np.array([[0.9, 0.2, 0.0, 0.5, 0.8], [0.3, 0.4, 0.1, 0.0, 0.0]], dtype=np.float32)
    first, second = lexical_weights(weights, batch, [0, 2])
    assert first.indices.tolist() == [7] and first.values.tolist() == [0.5]  # 9 weighs 0, 7 twice
    assert second.indices.tolist() == [5] and np.isclose(second.values[0], 0.4)


def test_colbert_rows_are_the_items_own_normalized_rows(tmp_path: Path) -> None:
    head = LinearHead(np.eye(2, dtype=np.float32) * 2, np.zeros(2, dtype=np.float32))
    head.save(tmp_path / "h.npz")
    loaded = LinearHead.load(tmp_path / "h.npz")
    rows = loaded(np.array([[[3.0, 4.0], [0.0, 1.0], [9.0, 9.0]]], dtype=np.float32))
    (got,) = colbert_rows(rows, [Tokens([0, 1, 2])])  # three tokens: two rows (the first token is dropped)
    np.testing.assert_allclose(got, [[0.6, 0.8], [0.0, 1.0]], atol=1e-7)
