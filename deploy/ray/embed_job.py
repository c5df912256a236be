"""A corpus embedded across a Ray cluster: Ray Data reads a Parquet dataset, an actor pool runs embedserve's own
runner on it (`map_batches`), and the vectors are written as Parquet (`id`, `vector`), as `embedserve embed` writes
them on one machine. From the repository root (`pip install -e '.[torch,onnx,ray]'`):

    python -m deploy.ray.embed_job INPUT.parquet OUTPUT_DIR --actors 8 --cpus-per-actor 2
    python -m deploy.ray.embed_job s3://bucket/corpus/ s3://bucket/vectors/ --address auto --model /models/bge-m3

Each actor loads the model once (an ONNX fp32 export by default, as the server serves it: `backend: auto`) and
runs each block of rows as the server's batcher would: sorted by length and cut into token-budgeted batches
(batching.forming). `--address auto` joins a running cluster (`ray start --head` on one machine, `ray start
--address HEAD:6379` on the others); without it, a cluster of this machine alone is started.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np

from embedserve.batching.config import BatchingConfig
from embedserve.batching.forming import grow_batch
from embedserve.models.embedder import Embedder
from embedserve.models.loading import load_model
from embedserve.models.sources import DEFAULT_MODEL, spec_from_cli
from embedserve.quantize.served_export import resolve_backend
from embedserve.server.corpus.parts import vector_table


def embed_texts(
    embedder: Embedder, texts: list[str], *, prompt_name: str | None = None, dimensions: int | None = None
) -> np.ndarray:
    """`texts` embedded as the server embeds them: tokenized with the prompt, sorted by length, run in the batches
    the batcher's forming rule makes within the runner's own token budget, then finished (cut, normalized)."""
    runner = embedder.runner
    config = BatchingConfig().for_device(runner.info.device, runner.cpu.batch_tokens)
    tokens = embedder.tokenize(texts, prompt_name=prompt_name)
    order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))
    lengths = [len(tokens[i]) for i in order]
    rows: list[Any] = [None] * len(tokens)
    start = 0
    while start < len(order):
        _, stop = grow_batch(lengths[start:], 0, config, padded=runner.cost == "padded")  # grows towards longer
        batch = order[start : start + stop]
        for i, row in zip(batch, runner.run([tokens[i] for i in batch])):
            rows[i] = row
        start += stop
    return embedder.finish(np.stack(rows), dimensions=dimensions)


class EmbedBlocks:
    """One actor of the pool: the model, loaded once, then a block of rows per call."""

    def __init__(
        self, model: str | None, threads: int, text_column: str, id_column: str, prompt_name: str | None,
        dimensions: int | None,
    ) -> None:  # fmt: skip
        spec = spec_from_cli(model) if model else DEFAULT_MODEL
        self.embedder: Embedder = load_model(resolve_backend(spec.model_copy(update={"threads": threads}))).model
        self.text_column, self.id_column = text_column, id_column
        self.prompt_name, self.dimensions = prompt_name, dimensions

    def __call__(self, block: Any) -> Any:
        texts = block.column(self.text_column).to_pylist()
        vectors = embed_texts(self.embedder, texts, prompt_name=self.prompt_name, dimensions=self.dimensions)
        return vector_table(block.column(self.id_column).to_pylist(), vectors)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deploy.ray.embed_job", description=__doc__.splitlines()[0])
    p.add_argument("input", help="a Parquet file or folder (local, s3://, gs://, ...)")
    p.add_argument("output", help="a folder the Parquet parts are written to")
    p.add_argument("--model", default=None, metavar="[ID=]SOURCE", help="default: the bundled MiniLM")
    p.add_argument("--text-column", default="text")
    p.add_argument("--id-column", default="id", help="kept beside each vector (default: id)")
    p.add_argument("--prompt-name", default=None)
    p.add_argument("--dimensions", type=int, default=None)
    p.add_argument("--actors", type=int, default=2, help="actors in the pool, each with the model loaded")
    p.add_argument("--cpus-per-actor", type=int, default=1, help="CPUs Ray reserves for an actor: its threads")
    p.add_argument("--gpus-per-actor", type=float, default=0)
    p.add_argument("--block-rows", type=int, default=1024, help="rows an actor gets per call")
    p.add_argument("--blocks", type=int, default=None, help="split the input into this many blocks (default: Ray's)")
    p.add_argument("--address", default=None, help="a running cluster (`auto`, or HEAD:6379); default: start one here")
    return p


def main(argv: list[str] | None = None) -> int:
    import ray

    args = _parser().parse_args(argv)
    started = time.monotonic()
    # A cluster of this machine alone: its CPUs for the actors, and one more slot for Ray Data's own reading and
    # writing tasks, which would otherwise wait for a CPU the actors hold for the whole run.
    extra = {} if args.address else {"num_cpus": (os.cpu_count() or 1) + 1}
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False, **extra)
    dataset = ray.data.read_parquet(args.input, override_num_blocks=args.blocks).select_columns(
        [args.text_column, args.id_column]
    )
    vectors = dataset.map_batches(
        EmbedBlocks,
        fn_constructor_args=(
            args.model,
            args.cpus_per_actor,
            args.text_column,
            args.id_column,
            args.prompt_name,
            args.dimensions,
        ),  # fmt: skip
        batch_size=args.block_rows,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=args.actors),
        num_cpus=args.cpus_per_actor,
        num_gpus=args.gpus_per_actor or None,
    )
    vectors.write_parquet(args.output)
    rows = ray.data.read_parquet(args.output).count()
    seconds = time.monotonic() - started
    print(f"embedded {rows:,} rows into {args.output} with {args.actors} actors in {seconds:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
