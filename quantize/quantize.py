"""INT8 quantization of an exported graph, set for the target ISA.

Dynamic mode (the default) quantizes activations per token row (`quantize.rowwise`): each row of
each MatMul input gets its own scale and zero point, so a text's vector is the same alone or in any
batch, and an outlier token no longer coarsens its neighbours' rounding; outlier channels are
smoothed into the weights by constants from one calibration pass. Measured on all-MiniLM-L6-v2 over
the evaluation set (`quantize.eval_texts`, 371 texts; AMD EPYC with AVX-512 VNNI), INT8 vs fp32:

    onnxruntime's per-tensor quantize_dynamic (2 MatMuls kept fp32)  mean 0.99220  min 0.95396
      same text alone vs in a batch: max |diff| 6.0e-2, 29 of 93 texts below cosine 0.99
    per-row, smoothed (all 36 MatMuls INT8)                          mean 0.99892  min 0.99444
      same text alone vs in a batch: max |diff| 0 (identical float32 bits)

Static mode (calibrated QDQ, `--mode static`) is batch-independent too (fixed scales), but one range
per tensor, fixed in advance, cannot follow BERT's per-token outliers: calibrated on the set's even
half, it reaches mean 0.96603 / min 0.82161 with 9 of 36 MatMuls kept fp32. Kept for comparison.

Why these settings:

- per-channel (per output column) symmetric int8 weights: per-tensor weight scales lose far more.
- the target (`models.isa` has the kernels): AVX2 without VNNI multiplies u8 activations by s8
  weights with `vpmaddubsw`, whose 16-bit pairwise sums saturate on full-range weights; 7-bit weights
  (`reduce_range`) cannot. VNNI (`vpdpbusd`) and ARM64 accumulate in 32 bits. So `portable` (the
  default) and `avx2` write 7-bit weights, which every CPU computes exactly, and `avx512_vnni` and
  `arm64` full-range ones, which only those compute exactly (the server refuses them on x86 without
  VNNI). MiniLM over the evaluation set (AMD EPYC, AVX-512 VNNI, 2026-12-04): 7-bit mean 0.99795 /
  min 0.99276 with 2 of 36 MatMuls kept fp32, full range 0.99892 / 0.99444 with none; INT8 items/s
  in-process (batches of 32, 2 threads, A B A B x4): 7-bit 0.94-0.99x full range, ~5% on average, so
  one folder for every CPU is the default. ARM64 gets the same u8 per-row activations:
  onnxruntime's ARM u8s8 GEMM (udot, or widened NEON products) computes the same integers. Checked on the arm64 image under qemu (onnxruntime 1.32): the MiniLM folder's INT8
  outputs are identical as a Cortex-A72 (no dot product) and as a Neoverse-N1, and within cosine
  0.998 of x86's; the rest is ARM's fp32 kernels (1e-4 from x86's in hidden states), whose
  round-off also moves with the padded length, so on ARM a text alone and batched differ by up to
  1.8e-3 (bit-identical on x86). The graph has no DynamicQuantizeMatMul, so onnxruntime's ARM paths
  that re-quantize activations themselves (KleidiAI on SME cores) do not apply.
- only MatMul/Gemm weights are quantized; embedding tables (Gather) stay fp32, and so do fused
  Attention nodes (`--optimize`), whose input projection cannot take per-row scales.
- `rank_sensitive_nodes` ranks nodes by how coarse a row's step is next to its values, and the build
  keeps the worst few in fp32 only if the accuracy target is not met without.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedserve.models.families import family_of
from embedserve.models.isa import ISAS, Isa

Target = Literal["portable"] | Isa
"""`portable`: 7-bit weights, which every CPU computes exactly (`models.isa`); an ISA: that CPU's best."""
Mode = Literal["dynamic", "static"]
TARGETS: tuple[str, ...] = ("auto", "portable", *ISAS)
QUANTIZED_OPS = ("MatMul", "Gemm")


def resolve_target(target: str) -> Target:
    """`auto` is `portable`: one folder that holds its gate on every CPU, for ~5% of INT8 speed on VNNI
    (the module docstring has the figures)."""
    if target == "auto":
        return "portable"
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    return target  # type: ignore[return-value]


@dataclass(slots=True)
class Settings:
    """What onnxruntime.quantization is called with; recorded as-is in manifest.json."""

    target: Target
    mode: Mode
    per_channel: bool = True
    reduce_range: bool = False
    weight_type: str = "QInt8"
    activation_type: str = "QUInt8"
    op_types: list[str] = field(default_factory=lambda: list(QUANTIZED_OPS))
    exclude: list[str] = field(default_factory=list)
    quant_format: str | None = None  # static only
    calibrate_method: str | None = None  # static only
    extra_options: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def settings_for(target: Target, mode: Mode = "dynamic") -> Settings:
    if mode not in ("dynamic", "static"):
        raise ValueError(f"mode must be 'dynamic' or 'static', not {mode!r}")
    settings = Settings(target=target, mode=mode, reduce_range=target in ("portable", "avx2"))
    if mode == "dynamic":
        # Activation x activation MatMuls (QK^T, attention x V) stay fp32: no constant weight to scale.
        # Per-row asymmetric activations; channels smoothed (SmoothQuant, alpha 0.5) by the
        # calibration pass's channel ranges.
        settings.extra_options = {"activation_scales": "per-row", "smoothing_alpha": 0.5}
    else:
        # DefaultTensorType (1: FLOAT) types outputs of fused contrib ops that shape inference cannot.
        settings.extra_options = {"MatMulConstBOnly": True, "DefaultTensorType": 1}
        settings.quant_format = "QDQ"
        settings.calibrate_method = "MinMax"
        settings.op_types = ["MatMul", "Gemm"]
    return settings


def has_external_data(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


class _DropPreprocessingHint(logging.Filter):
    """onnxruntime logs a hint to run its pre-processing on every call, on the root logger; its
    symbolic shape inference fails on optimum's graphs, and the accuracy report judges the result."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith("Please consider") and "pre-processing" in message)


def quantize_graph(
    src: Path,
    dst: Path,
    settings: Settings,
    *,
    calibration: Sequence[dict[str, np.ndarray]] | None = None,
    channel_absmax: dict[str, np.ndarray] | None = None,
) -> None:
    """Writes the INT8 graph of `src` to `dst` with `settings` (excluded nodes stay fp32);
    dynamic mode smooths the activations `channel_absmax` names (`calibrate`)."""
    if settings.mode == "dynamic":
        from embedserve.quantize.rowwise import quantize_rowwise

        alpha = settings.extra_options.get("smoothing_alpha")
        quantize_rowwise(
            src,
            dst,
            op_types=settings.op_types,
            exclude=settings.exclude,
            reduce_range=settings.reduce_range,
            channel_absmax=channel_absmax if alpha else None,
            alpha=alpha or 0.5,
        )
        return
    from onnxruntime.quantization import QuantType

    common: dict[str, Any] = {
        "op_types_to_quantize": settings.op_types,
        "per_channel": settings.per_channel,
        "reduce_range": settings.reduce_range,
        "weight_type": getattr(QuantType, settings.weight_type),
        "nodes_to_exclude": list(settings.exclude),
        "use_external_data_format": has_external_data(src),
        "extra_options": dict(settings.extra_options),
    }
    hint = _DropPreprocessingHint()
    logging.getLogger().addFilter(hint)
    try:
        _quantize(src, dst, settings, common, calibration)
    finally:
        logging.getLogger().removeFilter(hint)


def _quantize(
    src: Path,
    dst: Path,
    settings: Settings,
    common: dict[str, Any],
    calibration: Sequence[dict[str, np.ndarray]] | None,
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration:
        raise ValueError("static quantization needs calibration texts")
    import onnx

    input_names = {i.name for i in onnx.load(str(src), load_external_data=False).graph.input}
    quantize_static(
        src,
        dst,
        calibration_reader(calibration, input_names),
        quant_format=getattr(QuantFormat, settings.quant_format or "QDQ"),
        activation_type=getattr(QuantType, settings.activation_type),
        calibrate_method=getattr(CalibrationMethod, settings.calibrate_method or "MinMax"),
        **common,
    )


def calibration_reader(batches: Sequence[dict[str, np.ndarray]], input_names: set[str]) -> Any:
    """onnxruntime's CalibrationDataReader over padded batches of calibration texts."""
    from onnxruntime.quantization import CalibrationDataReader

    feeds = [{k: v for k, v in b.items() if k in input_names} for b in batches]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(feeds)

    return Reader()


def read_calibration(path: Path, kind: str) -> list[Any]:
    """Non-empty lines of a UTF-8 file: texts, or (query, document) pairs split on a tab."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"calibration file {path} has no texts")
    if kind != "rerank":
        return lines
    pairs = []
    for n, line in enumerate(lines, 1):
        query, sep, document = line.partition("\t")
        if not sep:
            raise ValueError(f"{path}:{n}: a reranker calibration line is `query<TAB>document`")
        pairs.append((query, document))
    return pairs


def rank_sensitive_nodes(path: Path, batches: Sequence[dict[str, np.ndarray]], op_types: Sequence[str]) -> list[str]:
    """Nodes with a constant weight, most quantization-sensitive first (see `calibrate`)."""
    return calibrate(path, batches, op_types)[0]


def calibrate(
    path: Path, batches: Sequence[dict[str, np.ndarray]], op_types: Sequence[str]
) -> tuple[list[str], dict[str, np.ndarray]]:
    """One fp32 pass over `batches`: the nodes with a constant weight, most quantization-sensitive
    first, and each of their inputs' per-channel largest |x| over the real tokens (the smoothing
    factors of `quantize.rowwise` come from it).

    Each token row of an activation is quantized by its own range; a row whose range is set by a few
    outlier channels gets a step that is large next to its typical value. The score is that step
    (row range / 255) over the row's RMS, averaged over the real tokens, the worst batch counted."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in op_types and len(n.input) > 1 and n.input[1] in weights]
    if not nodes:
        return [], {}
    activations = sorted({n.input[0] for n in nodes})
    full = onnx.load(str(path))
    known = {o.name for o in full.graph.output}
    for name in activations:
        if name not in known:
            full.graph.output.append(onnx.ValueInfoProto(name=name))
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    options.log_severity_level = 3
    sess = ort.InferenceSession(full.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds_names = {i.name for i in sess.get_inputs()}
    scores = dict.fromkeys(activations, 0.0)
    absmax: dict[str, np.ndarray] = {}
    for batch in batches:
        values = sess.run(activations, {k: v for k, v in batch.items() if k in feeds_names})
        mask = batch["attention_mask"].astype(bool)
        for name, value in zip(activations, values):
            rows = (value[mask] if value.shape[:2] == mask.shape else value).reshape(-1, value.shape[-1])
            rows = rows.astype(np.float64)
            rms = np.sqrt(np.mean(np.square(rows), axis=1))
            step = (np.maximum(rows.max(axis=1), 0.0) - np.minimum(rows.min(axis=1), 0.0)) / 255.0
            scores[name] = max(scores[name], float(np.mean(step / np.maximum(rms, 1e-12))))
            channel = np.abs(rows).max(axis=0)
            absmax[name] = np.maximum(absmax[name], channel) if name in absmax else channel
    order = sorted(range(len(nodes)), key=lambda i: (-scores[nodes[i].input[0]], i))
    return [nodes[i].name for i in order], absmax


def optimizer_model_type(model_type: str) -> str | None:
    """onnxruntime.transformers.optimizer's fusions for this model's family (`Family.onnx_fusions`),
    if it has them: the families state it, so a family added there is fused here without a second list."""
    return family_of(model_type).onnx_fusions


def optimize_graph(src: Path, dst: Path, model_type: str) -> dict[str, Any]:
    """Fuses attention, LayerNorm and GELU subgraphs (onnxruntime's python fusions, no
    hardware-specific rewrites); returns the fused-op counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    kind = optimizer_model_type(model_type)
    if kind is None:
        raise ValueError(f"onnxruntime's transformer optimizer has no fusions for {model_type!r}")
    optimized = optimize_model(str(src), model_type=kind, num_heads=0, hidden_size=0, opt_level=0, use_gpu=False)
    optimized.save_model_to_file(str(dst), use_external_data_format=has_external_data(src))
    return {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
