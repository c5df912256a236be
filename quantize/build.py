"""The `quantize` tool end to end: export (verified), optionally fuse, quantize to INT8 with an
accuracy-targeted search, report, and write the INT8 graph only when it is accurate enough.

The search: quantize everything the settings allow; if the tuning half of the evaluation set
(even-indexed items) falls short of the goal, keep the most outlier-sensitive nodes in fp32
(1, 2, 3, 4, 6, 9, ... of them, at most a quarter) until it does. The goal sits a tenth of the way
from each threshold to 1, so the full-set figures the decision uses clear the thresholds with room.

The gate: an embedder's INT8 graph is written only if, over the whole evaluation set, both the mean
cosine with fp32 and the lowest single text's cosine reach their thresholds (users feel the worst
text, not the mean); a reranker's only if its scores' Spearman correlation with fp32 does. It judges
the integers the target computes: on a host whose kernels would saturate the graph's weights (AVX2
without VNNI, full-range weights for VNNI or ARM64), the graph's exact twin (`quantize.exact`).
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedserve.models.exported import read_config, write_config
from embedserve.models.isa import exact_isas, exact_on, host_isa, weight_bits
from embedserve.quantize import manifest as manifest_file
from embedserve.quantize.eval_texts import eval_texts, rerank_sets
from embedserve.quantize.exact import exact_twin
from embedserve.quantize.export import export
from embedserve.quantize.graph import clear_graph, externalize_weights, fp32_graphs, share_weights
from embedserve.quantize.onnx_eval import ExportedModel
from embedserve.quantize.quantize import (
    Settings,
    calibrate,
    optimize_graph,
    optimizer_model_type,
    quantize_graph,
    read_calibration,
    resolve_target,
    settings_for,
)
from embedserve.quantize.report import cosines, embed_accuracy, relevance, rerank_accuracy, spearman, speed
from embedserve.quantize.texts import RERANK_SETS, SENTENCES

log = logging.getLogger("embedserve.quantize")

INT8_FILE = "model_int8.onnx"
WORK_DIR = ".quantize-work"
# The search aims this fraction of the way from the threshold to 1 on the tuning half, so the
# decision on the full set does not hinge on the last digit.
GOAL_MARGIN = 0.1


@dataclass(slots=True)
class Options:
    target: str = "auto"
    mode: str = "dynamic"
    calibration: Path | None = None
    optimize: bool = False
    min_cosine: float = 0.99  # the lowest cosine any text of the evaluation set may have
    mean_cosine: float = 0.997  # the mean over the set
    min_spearman: float = 0.95
    force: bool = False
    kind: str | None = None
    opset: int | None = None
    bench_seconds: float = 3.0
    progress: bool | None = None  # None: a bar when stderr is a terminal


@dataclass(slots=True)
class Outcome:
    out: Path
    written: bool
    reason: str | None
    manifest: dict[str, Any] = field(default_factory=dict)


class _Steps:
    """The long steps as they happen: a tqdm bar in a terminal (`enabled` None) or when asked (True);
    otherwise (CI, `docker logs`, --no-progress) one log line as each step starts and ends, with its
    seconds, which tqdm's `disable=None` would leave silent until the end."""

    def __init__(self, names: Sequence[str], enabled: bool | None) -> None:
        from tqdm import tqdm

        bar = enabled if enabled is not None else sys.stderr.isatty()
        self._bar = tqdm(total=len(names), unit="step", disable=not bar) if bar else None
        self._total = len(names)
        self._done = 0

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        if self._bar is not None:
            self._bar.set_description(name)
        else:
            log.info("step %d/%d: %s", self._done + 1, self._total, name)
        yield
        self._done += 1
        if self._bar is not None:
            self._bar.update(1)
        else:
            log.info("step %d/%d: %s done in %.1f s", self._done, self._total, name, time.perf_counter() - started)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _goal(threshold: float) -> float:
    return threshold + (1.0 - threshold) * GOAL_MARGIN


def _schedule(nodes: int) -> list[int]:
    """How many nodes to keep in fp32 at each try: one at a time first, then ~1.5x steps."""
    limit = nodes // 4
    counts = [0, 1, 2, 3, 4]
    while counts[-1] < limit:
        counts.append(counts[-1] * 3 // 2)
    return sorted({min(c, limit) for c in counts})


def quantize_model(source: str | Path, out: Path, options: Options | None = None) -> Outcome:
    """Runs the whole tool; see the module docstring. Never raises for an inaccurate INT8 graph:
    the outcome says it was not written, and why."""
    options = options or Options()
    out = Path(out)
    if options.mode == "static" and options.calibration is None:
        raise ValueError("--mode static needs --calibration FILE")
    target = resolve_target(options.target)
    settings = settings_for(target, options.mode)  # type: ignore[arg-type]
    steps = _Steps(["export", "optimize", "calibrate", "quantize", "evaluate", "benchmark"], options.progress)
    try:
        return _run(source, out, options, settings, steps)
    finally:
        steps.close()
        shutil.rmtree(out / WORK_DIR, ignore_errors=True)


def _run(source: str | Path, out: Path, options: Options, settings: Settings, steps: _Steps) -> Outcome:
    with steps.step("export"):
        exported = export(source, out, kind=options.kind, opset=options.opset)
    config = read_config(out)
    kind = config["kind"]
    work = out / WORK_DIR
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()

    with steps.step("optimize"):
        optimization = _optimize(out, config, work) if options.optimize else {"applied": False}

    fp32 = ExportedModel(out)
    sets = evaluation_rerank_sets()
    items: list[Any] = list(eval_texts()) if kind == "embed" else [(q, d) for q, docs in sets for d in docs]
    tuning = items[::2]
    reference_all = fp32.outputs(items)
    reference_tuning = reference_all[::2]
    thresholds = (
        {"mean_cosine": options.mean_cosine, "min_cosine": options.min_cosine}
        if kind == "embed"
        else {"spearman": options.min_spearman}
    )

    def figures(reference: np.ndarray, quantized: np.ndarray) -> dict[str, float]:
        if kind == "embed":
            cos = cosines(reference, quantized)
            return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}
        return {"spearman": spearman(relevance(reference), relevance(quantized))}

    def margin(measured: dict[str, float], bar: Callable[[float], float]) -> float:
        """How far the worst figure is above its bar, as a share of the room between bar and 1."""
        return min((measured[k] - bar(t)) / max(1.0 - bar(t), 1e-9) for k, t in thresholds.items())

    with steps.step("calibrate"):
        calibration = None
        if options.mode == "static":
            assert options.calibration is not None
            calibration = fp32.batches(read_calibration(options.calibration, kind), batch_size=16)
        ranked, channel_absmax = calibrate(out / "model.onnx", fp32.batches(tuning, batch_size=16), settings.op_types)

    host, bits = host_isa(), weight_bits(settings.reduce_range)
    twin = not exact_on(host, bits)  # no target computes saturated sums: 7-bit weights never saturate

    def as_target(graph: Path) -> ExportedModel:
        """The graph as the target computes it: itself where this host's kernels compute the target's
        integers, else its exact twin (`quantize.exact`): never a saturating host's clipped sums."""
        if twin:
            exact = work / f"exact-{graph.name}"
            clear_graph(exact)
            exact_twin(graph, exact)
            graph = exact
        return ExportedModel(out, f"{WORK_DIR}/{graph.name}")

    candidate = work / "candidate.onnx"
    trials: list[dict[str, Any]] = []
    best: tuple[float, int, Path] | None = None
    with steps.step("quantize"):
        for count in _schedule(len(ranked)):
            settings.exclude = ranked[:count]
            clear_graph(candidate)
            quantize_graph(
                out / "model.onnx", candidate, settings, calibration=calibration, channel_absmax=channel_absmax
            )
            measured = figures(reference_tuning, as_target(candidate).outputs(tuning))
            trials.append({"excluded": count, **{f"tuning_{k}": round(v, 6) for k, v in measured.items()}})
            value = margin(measured, _goal)
            if best is None or value > best[0]:
                kept = work / f"best-{count}.onnx"
                clear_graph(kept)
                for produced in work.glob(candidate.name + "*"):
                    produced.rename(work / produced.name.replace(candidate.name, kept.name, 1))
                best = (value, count, kept)
            if value >= 0:
                break
    assert best is not None
    settings.exclude = ranked[: best[1]]
    int8_path = best[2]

    with steps.step("evaluate"):
        quantized_all = as_target(int8_path).outputs(items)
        if kind == "embed":
            accuracy = embed_accuracy(reference_all, quantized_all, items)
        else:
            accuracy = rerank_accuracy(reference_all, quantized_all, sets=sets)
        accuracy["threshold"] = dict(thresholds)
        accuracy["tuning"] = {"items": len(tuning), "trials": trials, "nodes_ranked": len(ranked)}

    with steps.step("benchmark"):
        speed_figures = (
            _benchmark(out, exported.torch_model, int8_path, kind, items[::8], options.bench_seconds)
            if options.bench_seconds > 0
            else None
        )

    short = [f"{k} {accuracy[k]:.5f} is below the threshold {t}" for k, t in thresholds.items() if accuracy[k] < t]
    passed = not short
    reason = None if passed else "INT8 " + "; ".join(short)
    written = passed or options.force
    clear_graph(out / INT8_FILE)
    if written:
        for produced in work.glob(int8_path.name + "*"):
            produced.rename(out / produced.name.replace(int8_path.name, INT8_FILE, 1))
    config["files"]["int8"] = INT8_FILE if written else None
    share_weights(out, fp32_graphs(config))
    if written:
        externalize_weights(out / INT8_FILE)
    write_config(out, config)

    manifest = {
        **exported.manifest,
        "target": settings.target,
        "mode": settings.mode,
        "opset": exported.manifest["export"]["opset"],
        "quantization": {
            **settings.as_dict(),
            "weight_bits": bits,
            "exact_on": exact_isas(bits),
            "evaluated_on": host,
            "evaluated_with": "exact integer twin (quantize.exact)" if twin else "this host's kernels",
            "calibration": str(options.calibration) if options.calibration else None,
            "written": written,
            "forced": bool(options.force and not passed),
            "refused": reason,
        },
        "optimization": optimization,
        "accuracy": accuracy,
        "speed": speed_figures,
        "timestamp": manifest_file.now(),
    }
    manifest_file.write(out, manifest)
    if reason:
        log.warning("%s%s", reason, "; written anyway (--force)" if written else "; model_int8.onnx not written")
    return Outcome(out, written, reason, manifest)


def evaluation_rerank_sets() -> list[tuple[str, tuple[str, ...]]]:
    """What rerankers are judged on: the built-in sets, then one set per evaluation-set topic."""
    return [*RERANK_SETS, *rerank_sets()]


def _optimize(out: Path, config: dict[str, Any], work: Path) -> dict[str, Any]:
    """Fuses the fp32 graph in place when onnxruntime's optimizer knows the family, keeping it only
    if it still matches the verified export."""
    model_type = config["model_type"]
    if optimizer_model_type(model_type) is None:
        return {"applied": False, "reason": f"no onnxruntime transformer fusions for {model_type!r}"}
    fused = work / "fused.onnx"
    fused_ops = optimize_graph(out / "model.onnx", fused, model_type)
    items: list[Any] = (
        list(SENTENCES[::3]) if config["kind"] == "embed" else [(q, d) for q, docs in RERANK_SETS for d in docs][::3]
    )
    before = ExportedModel(out).outputs(items)
    after = ExportedModel(out, f"{WORK_DIR}/{fused.name}").outputs(items)
    if config["kind"] == "embed":
        agreement = {"min_cosine": float(cosines(before, after).min())}
        ok = agreement["min_cosine"] >= 0.9999
    else:
        agreement = {"max_abs_diff": float(np.abs(before - after).max())}
        ok = agreement["max_abs_diff"] <= 1e-4
    if not ok:
        return {"applied": False, "reason": f"fused graph differs from the export: {agreement}"}
    clear_graph(out / "model.onnx")
    for produced in work.glob(fused.name + "*"):
        produced.rename(out / produced.name.replace(fused.name, "model.onnx", 1))
    return {"applied": True, "optimizer": "onnxruntime.transformers.optimizer", "fused_ops": fused_ops, **agreement}


def _benchmark(
    out: Path, torch_model: Any, int8_path: Path, kind: str, items: list[Any], seconds: float
) -> dict[str, Any]:
    fp32 = ExportedModel(out)
    int8 = ExportedModel(out, f"{WORK_DIR}/{int8_path.name}")

    def onnx_run(model: ExportedModel) -> Callable[[], int]:
        return lambda: len(model.outputs(items))

    def torch_run() -> int:
        if kind == "embed":
            torch_model.encode(items, batch_size=32, show_progress_bar=False)
        else:
            torch_model.predict(items, batch_size=32, show_progress_bar=False)
        return len(items)

    started = time.perf_counter()
    figures = speed({"torch": torch_run, "onnx_fp32": onnx_run(fp32), "onnx_int8": onnx_run(int8)}, seconds)
    figures["items"] = len(items)
    figures["wall_seconds"] = round(time.perf_counter() - started, 1)
    return figures
