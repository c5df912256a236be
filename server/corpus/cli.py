"""`embedserve embed INPUT --out OUTPUT`: embed a corpus file in-process, resumably (server.corpus.run)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "embed",
        help="embed a corpus file (JSONL, CSV or Parquet) into .npy or Parquet, in-process and resumable",
        description="Embed every row of a JSONL, CSV or Parquet file with a model, through the server's own batcher "
        "at full speed, into a .npy matrix (rows in input order) or a Parquet file (id, vector). Parts are written "
        "as they complete into OUTPUT.parts/: rerunning the same command continues where a run stopped. Settings "
        "(EMBEDSERVE_DEVICE, EMBEDSERVE_THREADS, EMBEDSERVE_MAX_BATCH_TOKENS, ...) apply as to `serve`.",
    )
    p.add_argument("input", type=Path, metavar="INPUT", help=".jsonl, .csv or .parquet")
    p.add_argument("--out", type=Path, required=True, metavar="OUTPUT", help=".npy or .parquet")
    p.add_argument(
        "--model", default=None, metavar="[ID=]SOURCE", help="a folder or hub id (default: the bundled MiniLM)"
    )
    p.add_argument("--text-column", default="text", help="the field holding each text (default: text)")
    p.add_argument("--id-column", default=None, help="the field holding each row's id (default: the row's number)")
    p.add_argument("--input-format", choices=("jsonl", "csv", "parquet"), help="default: from INPUT's suffix")
    p.add_argument("--prompt-name", default=None, help="a prompt of the model's (e.g. query, document)")
    p.add_argument("--dimensions", type=int, default=None, help="Matryoshka: keep this many dimensions")
    p.add_argument("--part-rows", type=int, default=2048, help="rows a part: what a rerun may redo at most")
    p.add_argument("--progress-every", type=int, default=10_000, help="off a terminal: a progress line per N texts")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    from embedserve.models.errors import InvalidInput, ModelLoadError
    from embedserve.models.sources import DEFAULT_MODEL, spec_from_cli
    from embedserve.quantize.served_export import resolve_backend
    from embedserve.server.config.settings import Settings
    from embedserve.server.corpus.parts import ResumeMismatch, output_format
    from embedserve.server.corpus.run import embed_corpus
    from embedserve.server.corpus.tables import Corpus, CorpusError
    from embedserve.server.serving.seam import EmbedParams
    from embedserve.server.telemetry.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        output_format(args.out)
        corpus = Corpus.open(
            args.input, text_column=args.text_column, id_column=args.id_column, format=args.input_format
        )
        spec = spec_from_cli(args.model) if args.model else DEFAULT_MODEL
        updates = {k: v for k, v in {"device": settings.device, "threads": settings.threads}.items() if v}
        spec = resolve_backend(spec.model_copy(update=updates))
        options = EmbedParams(dimensions=args.dimensions, prompt_name=args.prompt_name)
        outcome = asyncio.run(
            embed_corpus(
                corpus,
                args.out,
                spec,
                settings.batching(),
                options,
                part_rows=args.part_rows,
                progress_every=args.progress_every,
            )
        )
    except (CorpusError, ResumeMismatch, InvalidInput, ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    resumed = f", continuing after {outcome.resumed_at:,} rows done before" if outcome.resumed_at else ""
    print(
        f"embedded {outcome.rows:,} texts into {args.out} ({outcome.rate:,.1f} texts/s over {outcome.seconds:.1f} s"
        f"{resumed})",
        file=sys.stderr,
    )
    return 0
