"""`python -m bench.memory`: peak resident memory of server variants under one load, side by side.

Each variant is a contender from bench/servers.py plus extra environment, e.g.

    python -m bench.memory torch=embedserve onnx=embedserve-onnx \
        onnx-2k=embedserve-onnx,EMBEDSERVE_MAX_BATCH_TOKENS=2048 int8=embedserve-onnx-int8 \
        old-folder=embedserve-onnx,onnx_dir=/path/to/another/quantize/folder

Each is started fresh, its RSS read once ready (idle) and its peak (VmHWM) after the load; with
`--rounds 2` the order is reversed on the second round, so drift on a shared machine shows up as a
spread rather than as a difference. Memory peaks barely move with CPU contention; items/s does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.ceiling import default_model_dir
from bench.run import Scenario, drive
from bench.servers import CONTENDERS, ONNX_BACKENDS, REPO, Server, contender, ensure_onnx_export, free_port
from bench.workloads import WORKLOADS


def parse_variant(text: str) -> tuple[str, str, dict[str, str]]:
    """`NAME=CONTENDER[,KEY=VALUE...]` -> (name, contender, env); the key `onnx_dir` is not
    environment but this variant's `embedserve quantize` folder."""
    name, _, rest = text.partition("=")
    parts = rest.split(",")
    if not name or parts[0] not in CONTENDERS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=CONTENDER[,KEY=VALUE...] with one of {CONTENDERS}")
    env = dict(kv.split("=", 1) for kv in parts[1:] if kv)
    return name, parts[0], env


def variant_server(which: str, env: dict[str, str], args: argparse.Namespace) -> Server:
    """A variant started on a free port; the key `onnx_dir` in its env names its own quantize folder."""
    port = free_port()
    onnx_dir = env.get("onnx_dir") or args.onnx_dir
    server_env = {key: value for key, value in env.items() if key != "onnx_dir"}
    spec = contender(which, port, args.model_id, args.model_dir, [], server_env, Path(onnx_dir) if onnx_dir else None)
    return Server(spec, port)


def measure(name: str, which: str, env: dict[str, str], sc: Scenario, args: argparse.Namespace) -> dict:
    with variant_server(which, env, args) as server:
        ready = server.wait_ready(args.ready_timeout)
        idle, idle_peak = server.rss_mb(), server.peak_rss_mb()
        run = drive(server, sc, args)
        after, peak = server.rss_mb(), server.peak_rss_mb()
    return {
        "variant": name,
        "contender": which,
        "env": {key: value for key, value in env.items() if key != "onnx_dir"},
        "ready_s": round(ready, 2),
        "idle_rss_mb": idle,
        "idle_peak_rss_mb": idle_peak,
        "rss_after_mb": after,
        "peak_rss_mb": peak,
        "items_per_s": run["items_per_s"],
        "p99_ms": (run["latency_ms"] or {}).get("p99"),
        "errors": run["errors"],
        "server_cpu_cores": run["server_cpu_cores"],
        "other_cpu_cores": run["other_cpu_cores"],
    }


def variants_parser(
    prog: str, description: str, *, concurrency: int, duration: float, warmup: float, ready_timeout: float
) -> argparse.ArgumentParser:
    """The options bench.memory and bench.soak share: the server variants, one load, the model."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("variants", nargs="+", type=parse_variant, metavar="NAME=CONTENDER[,KEY=VALUE...]")
    p.add_argument("--workload", choices=WORKLOADS, default="mixed")
    p.add_argument("--concurrency", type=int, default=concurrency)
    p.add_argument("--items", type=int, default=1)
    p.add_argument("--duration", type=float, default=duration)
    p.add_argument("--warmup", type=float, default=warmup)
    p.add_argument("--model-dir", default=None)
    p.add_argument("--model-id", default="all-MiniLM-L6-v2")
    p.add_argument("--onnx-dir", type=Path)
    p.add_argument("--ready-timeout", type=float, default=ready_timeout)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=4096, help="distinct texts per workload")
    p.add_argument("--quiet-wait", type=float, default=0.0, help="seconds to wait for a quiet machine before each load")
    return p


def prepare(args: argparse.Namespace) -> argparse.Namespace:
    """The model folder, and its ONNX export when an ONNX variant needs one (made once, in bench/.cache)."""
    args.model_dir = args.model_dir or default_model_dir()
    if any(which in ONNX_BACKENDS for _, which, _ in args.variants):
        args.onnx_dir = ensure_onnx_export(
            args.model_dir, args.onnx_dir or REPO / "bench" / ".cache" / f"{args.model_id}-onnx"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    p = variants_parser(
        "python -m bench.memory",
        __doc__.splitlines()[0],
        concurrency=32,
        duration=15.0,
        warmup=3.0,
        ready_timeout=120.0,
    )
    p.add_argument("--rounds", type=int, default=1, help="repeat the variants, reversing the order every other round")
    p.add_argument("--json", action="store_true", help="print the rows as JSON lines too")
    args = prepare(p.parse_args(argv))
    sc = Scenario(args.workload, args.concurrency, args.items)
    rows = []
    for r in range(args.rounds):
        for variant in args.variants if r % 2 == 0 else reversed(args.variants):
            row = measure(*variant, sc, args)
            rows.append(row)
            print(json.dumps(row) if args.json else _line(row), file=sys.stderr, flush=True)
    base = next((row for row in rows if row["contender"] == "embedserve"), None)
    print(f"\n{sc.workload} {sc.concurrency}×{sc.items}, {args.duration:g} s per run")
    print("| variant | idle RSS MB | load-time peak MB | peak RSS MB | items/s | p99 ms | errors | of torch RSS |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for row in rows:
        ratio = f"{row['peak_rss_mb'] / base['peak_rss_mb']:.2f}×" if base else "-"
        errors = ", ".join(f"{k}: {v}" for k, v in row["errors"].items()) or "0"
        print(
            f"| {row['variant']} | {row['idle_rss_mb']:.0f} | {row['idle_peak_rss_mb']:.0f} | {row['peak_rss_mb']:.0f} "
            f"| {row['items_per_s']:.1f} | {row['p99_ms']} | {errors} | {ratio} |"
        )


def _line(row: dict) -> str:
    return (
        f"{row['variant']}: idle {row['idle_rss_mb']} MB (peak so far {row['idle_peak_rss_mb']}), "
        f"peak {row['peak_rss_mb']} MB, {row['items_per_s']} items/s, p99 {row['p99_ms']} ms, "
        f"server {row['server_cpu_cores']} / other {row['other_cpu_cores']} cores"
    )


if __name__ == "__main__":
    main()
