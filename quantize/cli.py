"""`embedserve quantize` (and `python -m embedserve.quantize`): export a model folder to ONNX and quantize it.

`add_parser` adds the subcommand to any argparse subparsers (server/cli.py wires it); `run`
executes it. Exit status: 0 written, 1 export failed (no faithful ONNX graph), 3 the INT8 graph
was refused for accuracy (the fp32 export is still there), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from embedserve.models.preflight import missing
from embedserve.quantize.quantize import TARGETS
from embedserve.quantize.report import EXPECTED_SPEED

EXIT_OK, EXIT_EXPORT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE", help="a sentence-transformers / cross-encoder folder, or a hub id")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write the ONNX model to")
    p.add_argument("--kind", choices=("embed", "rerank"), help="default: guessed from the folder")
    p.add_argument(
        "--target",
        choices=TARGETS,
        default="auto",
        help="CPU the INT8 graph is for: portable (auto, the default: 7-bit weights, exact on every CPU), avx2, "
        "or avx512_vnni / arm64 (full-range weights: a little more accurate and ~5%% faster there, refused on x86 "
        "without VNNI)",
    )
    p.add_argument(
        "--mode", choices=("dynamic", "static"), default="dynamic", help="INT8 activation scales (default: dynamic)"
    )
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="static mode: UTF-8 texts, one per line (rerankers: query<TAB>document)",
    )
    p.add_argument("--optimize", action="store_true", help="fuse with onnxruntime's transformer optimizer first")
    p.add_argument(
        "--min-cosine",
        type=float,
        default=0.99,
        metavar="X",
        help="embedders: refuse INT8 if any text of the evaluation set falls below this cosine with fp32 "
        "(default 0.99)",
    )
    p.add_argument(
        "--mean-cosine",
        type=float,
        default=0.997,
        metavar="X",
        help="embedders: refuse INT8 below this mean cosine with fp32 over the evaluation set (default 0.997)",
    )
    p.add_argument(
        "--min-spearman",
        type=float,
        default=0.95,
        metavar="X",
        help="rerankers: refuse INT8 below this score Spearman correlation with fp32 (default 0.95)",
    )
    p.add_argument("--force", action="store_true", help="write the INT8 graph even below the threshold")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument(
        "--bench-seconds", type=float, default=3.0, metavar="S", help="timing per backend; 0 skips it (default 3)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds `quantize` to a CLI's subcommands; dispatch to `run(args)`."""
    p = subparsers.add_parser(
        "quantize",
        help="export a model to ONNX and quantize it to INT8",
        description="Export a model folder to ONNX (verified against PyTorch) and quantize it to INT8, "
        "refusing an INT8 graph that falls below the accuracy threshold.",
    )
    _configure(p)
    p.set_defaults(handler=run)
    return p


# What export, quantization and the accuracy report import (the `quantize` extra).
PACKAGES = ("torch", "transformers", "sentence_transformers", "optimum", "onnx", "onnxruntime")


def run(args: argparse.Namespace) -> int:
    if absent := missing(PACKAGES):  # a server install without the exporter's packages
        print(
            f"error: embedserve quantize needs the quantize extra ({', '.join(absent)} not installed): "
            "pip install 'embedserve[quantize]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from embedserve.quantize.build import Options, quantize_model
    from embedserve.quantize.pipeline import ExportError

    _show_steps()
    if args.mode == "static" and args.calibration is None:
        print("error: --mode static needs --calibration FILE", file=sys.stderr)
        return EXIT_USAGE
    if args.calibration is not None and not args.calibration.is_file():
        print(f"error: calibration file {args.calibration} does not exist", file=sys.stderr)
        return EXIT_USAGE
    options = Options(
        target=args.target,
        mode=args.mode,
        calibration=args.calibration,
        optimize=args.optimize,
        min_cosine=args.min_cosine,
        mean_cosine=args.mean_cosine,
        min_spearman=args.min_spearman,
        force=args.force,
        kind=args.kind,
        opset=args.opset,
        bench_seconds=args.bench_seconds,
        progress=False if args.no_progress else None,
    )
    try:
        outcome = quantize_model(args.source, args.out, options)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_EXPORT_FAILED
    print(summary(outcome.manifest))
    if outcome.reason and not outcome.written:
        print(f"refused: {outcome.reason}; {args.out / 'model_int8.onnx'} not written (--force writes it)")
        return EXIT_REFUSED
    return EXIT_OK


def _show_steps() -> None:
    """The tool's own lines (each step and its seconds, what it decided) on stderr, as they happen."""
    steps = logging.getLogger("embedserve.quantize")
    if not steps.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("quantize: %(message)s"))
        steps.addHandler(handler)
        steps.setLevel(logging.INFO)
        steps.propagate = False


def summary(manifest: dict) -> str:
    accuracy = manifest.get("accuracy") or {}
    export = manifest.get("export") or {}
    exported = f"exported {manifest.get('source')} ({manifest.get('kind')}, {manifest.get('model_type')})"
    if export.get("exporter"):
        exported += f" with {export['exporter']}"
        failed = [reason.split(":", 1)[0] for reason in export.get("failed_exporters") or []]
        if failed:
            exported += f" ({', '.join(failed)} could not export it)"
    lines = [exported]
    q = manifest.get("quantization") or {}
    kept = q.get("exclude") or []
    shown = ", ".join(kept[:4]) + (f" and {len(kept) - 4} more" if len(kept) > 4 else "")
    lines.append(
        f"int8: {q.get('mode')} ({(q.get('extra_options') or {}).get('activation_scales', 'per-tensor')} activation "
        f"scales) for {manifest.get('target')}, per_channel={q.get('per_channel')}, "
        f"reduce_range={q.get('reduce_range')}, {len(kept)} node(s) kept fp32{f' ({shown})' if kept else ''}, "
        f"written={q.get('written')}"
    )
    if "mean_cosine" in accuracy:
        lines.append(
            f"accuracy: mean cosine {accuracy['mean_cosine']:.5f}, min {accuracy['min_cosine']:.5f} "
            f"over {accuracy.get('items')} texts"
        )
        retrieval = accuracy.get("retrieval") or {}
        k = retrieval.get("k")
        if k and f"top{k}_overlap" in retrieval:
            lines.append(
                f"retrieval: top-{k} overlap {retrieval[f'top{k}_overlap']:.4f} (worst query "
                f"{retrieval[f'min_top{k}_overlap']:.2f}), top-1 agreement {retrieval['top1_agreement']:.4f}"
            )
        for row in accuracy.get("worst") or []:
            lines.append(f"  worst: {row['cosine']:.5f} [{row['language']}] {row['text']!r}")
    elif "spearman" in accuracy:
        lines.append(f"accuracy: spearman {accuracy['spearman']:.4f}, top-1 agreement {accuracy['top1_agreement']:.2f}")
        for row in accuracy.get("worst") or []:
            lines.append(f"  worst: spearman {row['spearman']:.4f} [{row['language']}] {row['query']!r}")
    speed = (manifest.get("speed") or {}).get("items_per_second")
    if speed:
        lines.append("items/s here: " + ", ".join(f"{name} {rate:.1f}" for name, rate in speed.items()))
    exact = q.get("exact_on") or []
    if exact:
        lines.append(f"int8 is exact (holds this accuracy) on: {', '.join(exact)}; what to expect there:")
        lines += [f"  {isa}: {EXPECTED_SPEED[isa]}" for isa in exact if isa in EXPECTED_SPEED]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedserve.quantize", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "quantize":
        argv = ["quantize", *argv]  # `python -m embedserve.quantize SOURCE --out DIR` works too
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(args)
