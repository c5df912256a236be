"""An INT8 graph's exact integers on any host: the same graph with its int8 weights shifted to uint8.

The gate must judge the arithmetic of the CPU an artifact is built for. An AVX2 host (no VNNI)
computes u8 x s8 with saturating int16 pair sums (`models.isa`), so an 8-bit-weight graph meant for
VNNI or ARM64, which compute it exactly, would be judged on clipped sums there. Here every int8
weight w (zero point 0) becomes the uint8 w + 128 with zero point 128: the integers
sum((a - za) * (w + 128 - 128)) are the same, and u8 x u8 products are widened to 16 bits before
any sum on every ISA, so onnxruntime computes them exactly everywhere. The float ops around the
integer GEMMs are untouched, so the twin's outputs are the target's up to float round-off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MS_DOMAIN = "com.microsoft"
# Op -> (index of its int8 weight input, index of that weight's zero point input).
_WEIGHT_INPUTS = {"MatMulIntegerToFloat": (1, 5), "DequantizeLinear": (0, 2)}


def exact_twin(src: Path, dst: Path) -> int:
    """Writes `src` with every constant int8 GEMM weight shifted to uint8 (see the module docstring)
    to `dst`; returns how many weights it shifted."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    shifted: dict[str, tuple[str, str]] = {}  # int8 weight -> (uint8 weight, its zero point)
    added: list[Any] = []
    for node in graph.node:
        where = _WEIGHT_INPUTS.get(node.op_type)
        if where is None or (node.op_type == "MatMulIntegerToFloat") != (node.domain == MS_DOMAIN):
            continue
        w_at, zp_at = where
        name = node.input[w_at] if len(node.input) > w_at else ""
        tensor = inits.get(name)
        if tensor is None or tensor.data_type != onnx.TensorProto.INT8:
            continue
        zero = node.input[zp_at] if len(node.input) > zp_at else ""
        if zero and (zero not in inits or np.any(numpy_helper.to_array(inits[zero]) != 0)):
            continue  # an asymmetric weight: not what `quantize` writes
        if name not in shifted:
            codes = numpy_helper.to_array(tensor).astype(np.int16) + 128
            u8, zp = f"{name}/exact_u8", f"{name}/exact_zp"
            added.append(numpy_helper.from_array(codes.astype(np.uint8), u8))
            # One zero point per scale: DequantizeLinear's scale's shape; MatMulIntegerToFloat's per column.
            scale = inits.get(node.input[1]) if node.op_type == "DequantizeLinear" else None
            zp_shape = tuple(scale.dims) if scale is not None else (codes.shape[-1],)
            added.append(numpy_helper.from_array(np.full(zp_shape, 128, dtype=np.uint8), zp))
            shifted[name] = (u8, zp)
        u8, zp = shifted[name]
        inputs = list(node.input) + [""] * (zp_at + 1 - len(node.input))
        inputs[w_at], inputs[zp_at] = u8, zp
        del node.input[:]
        node.input.extend(inputs)
    if shifted:
        used = {i for n in graph.node for i in n.input}
        kept = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept + added)
    onnx.save_model(model, str(dst))
    return len(shifted)
