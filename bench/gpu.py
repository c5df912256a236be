"""`python -m bench.gpu --out DIR`: the torch path on a GPU, against the raw forward pass it wraps.

For each model (random weights of the real sizes, bench.gpu_models), on full-length batches
(`--batch` rows of `--seq` tokens, no padding):

- raw: the Hugging Face model's forward alone in bfloat16, attention "eager" and "sdpa", and
  torch.compile'd (sdpa, EMBEDSERVE_COMPILE_BACKEND, default inductor): the ceiling;
- runner: TorchEmbeddingRunner.run as the server calls it (compile and dtype "auto": compiled,
  fp16 for BERT/XLM-R, bf16 for Gemma), from tokens to numpy: padding, copies and pooling
  included; its start-up (load, then compiling every length bucket) is timed too;
- parity: the runner's embeddings of mixed-length texts against the same folder in float32,
  uncompiled (least cosine similarity);
- server (`--server`): `python -m bench` with the embedserve contender under the mixed load, its
  items/s turned into real (unpadded) tokens/s and compared with the compiled ceiling.

Writes gpu-<UTC stamp>.json and .md into --out and prints the table. `--device cpu --small` runs
the fixtures' tiny models in seconds: a smoke test of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.gpu_models import FAMILIES, build
from embedserve.models.torch_loading import wants_compile

REPO = Path(__file__).resolve().parents[1]
TEXT = "A sentence that is repeated until it fills the whole sequence of the benchmark batch. "


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the JSON and Markdown results")
    p.add_argument("--models", default=",".join(FAMILIES), help=f"comma-separated, of {', '.join(FAMILIES)}")
    p.add_argument("--model-root", type=Path, help="where the model folders are built (default: OUT/models)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="the fixtures' tiny models (smoke test)")
    p.add_argument("--batch", type=int, help="rows per batch (default 512; 8 with --small)")
    p.add_argument("--seq", type=int, help="tokens per row (default 128; 32 with --small)")
    p.add_argument(
        "--max-length",
        type=int,
        help="the folders' token limit, which sets how many length buckets are compiled at start-up "
        "(default 512: 16 buckets; 32 with --small)",
    )
    p.add_argument("--seconds", type=float, help="measured seconds per figure (default 10; 0.3 with --small)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="the runner's ModelSpec.compile")
    p.add_argument(
        "--lengths",
        default="static,dynamic",
        help="EMBEDSERVE_COMPILE_LENGTHS variants of the runner to measure (default both; the server gets the faster)",
    )
    p.add_argument("--no-raw-compile", dest="raw_compile", action="store_false", help="skip the compiled raw forward")
    p.add_argument("--server", action="store_true", help="also run the server under the mixed load (python -m bench)")
    p.add_argument("--server-concurrency", type=int, default=64)
    p.add_argument("--server-items", type=int, default=32, help="texts per request")
    p.add_argument("--server-duration", type=float, default=30.0)
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra server environment, repeatable (e.g. EMBEDSERVE_BATCH_WORKERS=2: host work overlaps the GPU's)",
    )
    args = p.parse_args(argv)
    small = args.small
    args.batch = args.batch or (8 if small else 512)
    args.seq = args.seq or (32 if small else 128)
    args.max_length = args.max_length or (32 if small else 512)
    args.seconds = args.seconds if args.seconds is not None else (0.3 if small else 10.0)
    args.models = [m for m in args.models.split(",") if m]
    args.lengths = [v for v in args.lengths.split(",") if v]
    if not args.lengths or set(args.lengths) - {"static", "dynamic"}:
        p.error("--lengths takes static and/or dynamic")
    if unknown := [m for m in args.models if m not in FAMILIES]:
        p.error(f"unknown models {unknown}; choose from {', '.join(FAMILIES)}")
    if args.seq > args.max_length:
        p.error("--seq must not exceed --max-length")
    return args


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rate(step: Any, tokens_per_step: int, seconds: float, device: str, warmup: int = 3) -> dict:
    """Tokens/s of calling `step()` repeatedly for about `seconds` (at least 3 calls), after `warmup` calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    calls, started = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - started < seconds:
        step()
        calls += 1
    _sync(device)
    elapsed = time.perf_counter() - started
    return {"tokens_per_s": round(tokens_per_step * calls / elapsed, 1), "calls": calls, "seconds": round(elapsed, 3)}


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def raw_forward(folder: Path, args: argparse.Namespace) -> dict:
    """The HF model's forward alone on random full-length batches, bf16 (float32 on a CPU)."""

    results: dict[str, Any] = {}
    variants = [("eager", False), ("sdpa", False)] + ([("sdpa", True)] if args.raw_compile else [])
    for attention, compiled in variants:
        results[f"{attention}{'+compile' if compiled else ''}"] = _raw_variant(folder, args, attention, compiled)
        _free(args.device)
    return results


def _raw_variant(folder: Path, args: argparse.Namespace, attention: str, compiled: bool) -> dict:
    import torch
    from transformers import AutoModel

    dtype = torch.bfloat16 if args.device != "cpu" else torch.float32
    model = AutoModel.from_pretrained(folder, dtype=dtype, attn_implementation=attention).to(args.device).eval()
    shape = (args.batch, args.seq)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(5, min(1000, model.config.vocab_size), shape, generator=generator),
        "attention_mask": torch.ones(shape, dtype=torch.int64),
    }
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        batch["token_type_ids"] = torch.zeros(shape, dtype=torch.int64)
    batch = {k: v.to(args.device) for k, v in batch.items()}
    entry: dict[str, Any] = {"attention": model.config._attn_implementation}
    forward = model
    if compiled:
        backend = os.environ.get("EMBEDSERVE_COMPILE_BACKEND") or "inductor"
        mode = os.environ.get("EMBEDSERVE_COMPILE_MODE") if backend == "inductor" else None
        forward = torch.compile(model, backend=backend, mode=mode, dynamic=False)
        entry["backend"] = backend
    with torch.inference_mode():
        started = time.perf_counter()
        forward(**batch)
        _sync(args.device)
        entry["first_call_s"] = round(time.perf_counter() - started, 2)
        entry.update(_rate(lambda: forward(**batch), args.batch * args.seq, args.seconds, args.device))
    return entry


def runner_throughput(key: str, folder: Path, args: argparse.Namespace, lengths: str) -> tuple[dict, Any]:
    """TorchEmbeddingRunner.run on full-length batches, after the start-up the server would do."""
    from embedserve.batching.config import BatchingConfig
    from embedserve.models.compiled import LENGTHS_ENV
    from embedserve.models.spec import ModelSpec
    from embedserve.models.torch_embedding import TorchEmbeddingRunner
    from embedserve.models.types import Tokens

    spec = ModelSpec(id=key, source=str(folder), device=args.device, compile=args.compile)
    previous = os.environ.get(LENGTHS_ENV)
    os.environ[LENGTHS_ENV] = lengths  # read when the runner sets up its compiled forward
    started = time.perf_counter()
    try:
        runner = TorchEmbeddingRunner(spec, str(folder))
    finally:
        if previous is None:
            del os.environ[LENGTHS_ENV]
        else:
            os.environ[LENGTHS_ENV] = previous
    loaded = time.perf_counter()
    report = runner.warm(
        max_batch_tokens=args.batch * args.seq, max_batch_size=max(args.batch, BatchingConfig().max_batch_size)
    )
    warmed = time.perf_counter()
    sample = runner.tokenizer.encode([TEXT * args.seq])[0]  # truncated to the limit
    item = Tokens(sample.ids[: args.seq], sample.type_ids[: args.seq] if sample.type_ids else None)
    batch = [item] * args.batch
    result = {
        "dtype": runner.info.dtype,
        "compiled": report is not None and report.warmed > 0,
        "length_buckets": len(report.lengths) if report is not None else 0,
        "load_s": round(loaded - started, 2),
        "compile_s": round(warmed - loaded, 2),
        **_rate(lambda: runner.run(batch), args.batch * args.seq, args.seconds, args.device),
    }
    if report is not None:
        result["eager_batches"] = runner._compiled.eager_batches  # any > 0: a batch missed the warmed buckets
    return result, runner


def parity_batches(runner: Any) -> list[list]:
    """Mixed-length texts in batches of 13 (odd row counts, lengths across several buckets)."""
    from bench.workloads import generate

    tokens = sorted(runner.tokenizer.encode(generate("mixed", 64, seed=1)), key=len)
    return [tokens[start : start + 13] for start in range(0, len(tokens), 13)]


def reference_embeddings(folder: Path, args: argparse.Namespace) -> list[np.ndarray]:
    """The parity batches embedded in float32, uncompiled, on the same device."""
    from embedserve.models.spec import ModelSpec
    from embedserve.models.torch_embedding import TorchEmbeddingRunner

    spec = ModelSpec(id="reference", source=str(folder), device=args.device, dtype="float32", compile="off")
    reference = TorchEmbeddingRunner(spec, str(folder))
    return [reference.run(batch) for batch in parity_batches(reference)]


def parity(runner: Any, reference: list[np.ndarray]) -> dict:
    """The least cosine similarity between the runner's embeddings and the float32 ones."""
    a = np.concatenate([runner.run(batch) for batch in parity_batches(runner)])
    b = np.concatenate(reference)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"texts": len(a), "min_cosine": round(float(cosine.min()), 6)}


def mean_tokens(runner: Any, pool: int = 4096, seed: int = 0) -> float:
    """Real tokens per text of the bench's mixed workload, as this model's tokenizer cuts them."""
    from bench.workloads import generate

    return float(np.mean([len(t) for t in runner.tokenizer.encode(generate("mixed", pool, seed=seed))]))


def server_run(key: str, folder: Path, args: argparse.Namespace, tokens_per_item: float, lengths: str) -> dict:
    """`python -m bench` with the embedserve contender under the mixed load; batches as big as the raw ones."""
    out = args.out / f"server-{key}"
    argv = [sys.executable, "-m", "bench", "--model-dir", str(folder), "--model-id", key]
    argv += ["--contenders", "embedserve", "--workloads", "mixed", "--no-ceiling", "--quiet-wait", "0"]
    argv += ["--concurrency", str(args.server_concurrency), "--items-per-request", str(args.server_items)]
    argv += ["--duration", str(args.server_duration), "--ready-timeout", "3600", "--out", str(out)]
    argv += ["--server-env", f"EMBEDSERVE_MAX_BATCH_TOKENS={args.batch * args.seq}"]
    argv += [
        "--server-env",
        f"EMBEDSERVE_MAX_BATCH_SIZE={args.batch}",
        "--server-env",
        f"EMBEDSERVE_DEVICE={args.device}",
    ]
    argv += ["--server-env", f"EMBEDSERVE_COMPILE_LENGTHS={lengths}"]
    for pair in args.server_env:
        argv += ["--server-env", pair]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    record = json.loads(max(out.glob("*.json")).read_text())
    (contender,) = record["contenders"]
    if contender.get("error"):
        return {"error": contender["error"]}
    (run,) = contender["runs"]
    return {
        "compile_lengths": lengths,
        "items_per_s": run["items_per_s"],
        "tokens_per_item": round(tokens_per_item, 1),
        "tokens_per_s": round(run["items_per_s"] * tokens_per_item, 1),
        "latency_ms": run["latency_ms"],
        "errors": run["errors"],
        "result": str(max(out.glob("*.json"))),
    }


def _free(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def machine(device: str) -> dict:
    import torch
    import transformers

    info = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}
    if device.startswith("cuda"):
        info["device"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    else:
        info["device"] = platform.processor() or platform.machine()
    return info


def _mtok(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:.3f}"


def render(result: dict) -> str:
    args = result["args"]
    lines = [
        f"GPU bench {result['stamp']} on {result['machine']['device']} (torch {result['machine']['torch']}), "
        f"batch {args['batch']} × seq {args['seq']}, M tokens/s.",
        "",
        "| model | raw eager | raw sdpa | raw compiled | compiled ÷ eager |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, m in result["models"].items():
        raw = m["raw"]
        eager, compiled = raw["eager"]["tokens_per_s"], raw.get("sdpa+compile", {}).get("tokens_per_s")
        speedup = f"{compiled / eager:.2f}×" if compiled else "-"
        lines.append(
            f"| {key} | {_mtok(eager)} | {_mtok(raw['sdpa']['tokens_per_s'])} | {_mtok(compiled)} | {speedup} |"
        )
    lines += [
        "",
        "| model | runner lengths | dtype | M tokens/s | ÷ raw compiled | ÷ raw eager | start-up s: load + compile "
        "(buckets) | min cos vs fp32 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, m in result["models"].items():
        raw = m["raw"]
        ceiling = raw.get("sdpa+compile", raw["sdpa"])["tokens_per_s"]
        for lengths, r in m["runner"].items():
            lines.append(
                f"| {key} | {lengths if r['compiled'] else 'not compiled'} | {r['dtype']} | {_mtok(r['tokens_per_s'])} "
                f"| {r['tokens_per_s'] / ceiling:.0%} | {r['tokens_per_s'] / raw['eager']['tokens_per_s']:.2f}× "
                f"| {r['load_s']} + {r['compile_s']} ({r['length_buckets']}) | {r['parity']['min_cosine']} |"
            )
    servers = {key: m["server"] for key, m in result["models"].items() if "server" in m}
    if servers:
        lines += [
            "",
            f"Server, mixed load, {args['server_concurrency']} clients × {args['server_items']} texts, real tokens/s:",
            "",
            "| model | lengths | items/s | tokens/item | M tokens/s | ÷ raw compiled | p99 ms |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for key, sv in servers.items():
            if "error" in sv:
                lines.append(f"| {key} | error: {sv['error'][-200:]!r} | | | | | |")
                continue
            raw = result["models"][key]["raw"]
            ceiling = raw.get("sdpa+compile", raw["sdpa"])["tokens_per_s"]
            p99 = (sv.get("latency_ms") or {}).get("p99")
            lines.append(
                f"| {key} | {sv['compile_lengths']} | {sv['items_per_s']:,.1f} | {sv['tokens_per_item']} "
                f"| {_mtok(sv['tokens_per_s'])} | {sv['tokens_per_s'] / ceiling:.0%} | {p99 if p99 is not None else '-'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.model_root or args.out / "models"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result: dict[str, Any] = {
        "stamp": stamp,
        "machine": machine(args.device),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "models": {},
    }
    for key in args.models:
        print(f"{key}: building", file=sys.stderr, flush=True)
        folder = build(
            key, root / (f"small-{key}" if args.small else key), max_length=args.max_length, small=args.small
        )
        entry: dict[str, Any] = {"stands_for": FAMILIES[key].name, "folder": str(folder), "runner": {}}
        print(f"{key}: raw forward", file=sys.stderr, flush=True)
        entry["raw"] = raw_forward(folder, args)
        reference = reference_embeddings(folder, args)
        _free(args.device)
        tokens_per_item = 0.0
        for lengths in args.lengths if wants_compile(args.compile, args.device) else ["static"]:
            print(f"{key}: runner, {lengths} lengths (start-up compiles first)", file=sys.stderr, flush=True)
            measured, runner = runner_throughput(key, folder, args, lengths)
            measured["parity"] = parity(runner, reference)
            entry["runner"][lengths] = measured
            tokens_per_item = tokens_per_item or mean_tokens(runner)
            del runner
            _free(args.device)
        if args.server:
            lengths = max(entry["runner"], key=lambda name: entry["runner"][name]["tokens_per_s"])
            print(f"{key}: server under the mixed load ({lengths} lengths)", file=sys.stderr, flush=True)
            entry["server"] = server_run(key, folder, args, tokens_per_item, lengths)
        result["models"][key] = entry
    stem = args.out / f"gpu-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = render(result)
    stem.with_suffix(".md").write_text(table)
    print(table)
    return result


if __name__ == "__main__":
    main()
