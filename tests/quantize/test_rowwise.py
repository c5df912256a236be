"""Per-token INT8 on small hand-built graphs: each row is quantized by itself (so a row's output
does not depend on the other rows, however loud they are), the weights per output column, and the
result stays close to float32 as the target CPU computes it. No model needed.

What this host's own kernels give follows its ISA explicitly (`models.isa.host_isa`); the slow tier
runs this module again under qemu as an AVX2 CPU and as an ARM64 one (tests/quantize/test_targets.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

K, N = 48, 24


def _graph(path: Path, weight: np.ndarray, bias: np.ndarray, *, op: str = "MatMul", opset: int = 18) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", N])
    inits = [numpy_helper.from_array(bias, "b")]
    if op == "MatMul":
        inits.append(numpy_helper.from_array(weight, "w"))
        nodes = [
            helper.make_node("MatMul", ["x", "w"], ["xw"], name="mm"),
            helper.make_node("Add", ["xw", "b"], ["y"], name="add"),
        ]
    else:  # a Gemm with a transposed weight on the 2-D view, as classifier heads are exported
        inits += [
            numpy_helper.from_array(np.ascontiguousarray(weight.T), "wt"),
            numpy_helper.from_array(np.array([-1, K], dtype=np.int64), "flat"),
        ]
        nodes = [
            helper.make_node("Shape", ["x"], ["xshape"], end=-1),
            helper.make_node("Concat", ["xshape", "n"], ["yshape"], axis=0),
            helper.make_node("Reshape", ["x", "flat"], ["x2"]),
            helper.make_node("Gemm", ["x2", "wt", "b"], ["y2"], name="gemm", transB=1),
            helper.make_node("Reshape", ["y2", "yshape"], ["y"]),
        ]
        inits.append(numpy_helper.from_array(np.array([N], dtype=np.int64), "n"))
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save_model(model, str(path))
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as the server runs it
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.normal(0, 0.1, (K, N)).astype(np.float32), rng.normal(0, 0.5, N).astype(np.float32))


@pytest.mark.parametrize("reduce_range", [False, True], ids=["8-bit", "7-bit"])
@pytest.mark.parametrize(("op", "opset"), [("MatMul", 18), ("MatMul", 17), ("Gemm", 18)])
def test_rows_are_quantized_alone(
    weights: tuple[np.ndarray, np.ndarray], tmp_path: Path, op: str, opset: int, reduce_range: bool
) -> None:
    """Each row alone, close to float32 as the target computes it (the exact twin, on any host); this
    host's kernels give the same bits where `models.isa` says they are exact, and clipped sums (the
    saturation the server refuses such graphs for) where it says they are not."""
    from embedserve.models.isa import exact_on, host_isa, weight_bits
    from embedserve.quantize.exact import exact_twin
    from embedserve.quantize.rowwise import quantize_rowwise

    src = _graph(tmp_path / "fp32.onnx", *weights, op=op, opset=opset)
    done = quantize_rowwise(src, tmp_path / "int8.onnx", reduce_range=reduce_range)
    assert done == ["mm" if op == "MatMul" else "gemm"]
    assert exact_twin(tmp_path / "int8.onnx", tmp_path / "exact.onnx") == 1

    rng = np.random.default_rng(1)
    quiet = rng.normal(0, 1, (1, 5, K)).astype(np.float32)
    quiet[0, 2, :] += 0.5  # a one-sided row: the per-row zero point matters
    loud = rng.normal(0, 1, (1, 5, K)).astype(np.float32)
    loud[0, :, 7] = 300.0  # an outlier channel, as BERT's special tokens have
    zeros = np.zeros((1, 5, K), dtype=np.float32)
    reference = quiet @ weights[0] + weights[1]
    served = {}
    for graph in ("int8.onnx", "exact.onnx"):
        alone = served[graph] = _run(tmp_path / graph, quiet)
        for batch, position in ((np.concatenate([quiet, loud, zeros]), 0), (np.concatenate([zeros, loud, quiet]), 2)):
            out = _run(tmp_path / graph, batch)
            np.testing.assert_array_equal(out[position], alone[0])  # not close: the same float32 bits
        zero_out = _run(tmp_path / graph, zeros)
        np.testing.assert_allclose(zero_out[0], np.broadcast_to(weights[1], (5, N)), atol=1e-6)

    def error(out: np.ndarray) -> float:
        return float(np.abs(out - reference).max() / np.abs(reference).max())

    assert error(served["exact.onnx"]) < 0.02, error(served["exact.onnx"])
    if exact_on(host_isa(), weight_bits(reduce_range)):
        np.testing.assert_array_equal(served["int8.onnx"], served["exact.onnx"])
    else:  # u8 x s8 pairs of 8-bit weights overflow vpmaddubsw's int16 here: 0.278 on AVX2
        assert error(served["int8.onnx"]) > 0.1, error(served["int8.onnx"])


def test_weights_per_column_and_reduce_range() -> None:
    from embedserve.quantize.rowwise import quantize_weight

    w = np.array([[1.0, -0.011], [-2.0, 0.02], [0.5, 0.0]], dtype=np.float32)
    codes, scale = quantize_weight(w, reduce_range=False)
    assert codes.dtype == np.int8 and codes[:, 0].tolist() == [64, -127, 32] and codes[:, 1].tolist() == [-70, 127, 0]
    np.testing.assert_allclose(scale, [2.0 / 127, 0.02 / 127], rtol=1e-6)
    narrow, _ = quantize_weight(w, reduce_range=True)
    assert np.abs(narrow).max() == 63  # 7-bit: u8 x s8 pairs cannot saturate vpmaddubsw's 16 bits


def test_excluded_and_shared_inputs(weights: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    """Excluded nodes stay fp32; nodes that read one activation share one quantization of it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from embedserve.quantize.rowwise import quantize_rowwise

    w, b = weights
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", K])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq", N]) for n in ("q", "k", "v")]
    nodes = [helper.make_node("MatMul", ["x", f"w{n}"], [n], name=f"mm_{n}") for n in ("q", "k", "v")]
    inits = [numpy_helper.from_array(w * (i + 1), f"w{n}") for i, n in enumerate(("q", "k", "v"))]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], outs, inits), opset_imports=[helper.make_opsetid("", 18)]
    )
    onnx.save_model(model, str(tmp_path / "qkv.onnx"))
    done = quantize_rowwise(tmp_path / "qkv.onnx", tmp_path / "int8.onnx", exclude=["mm_v"])
    assert done == ["mm_q", "mm_k"]
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") == 1 and ops.count("MatMulIntegerToFloat") == 2 and ops.count("MatMul") == 1
    assert "DynamicQuantizeLinear" not in ops
