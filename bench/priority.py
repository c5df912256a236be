"""`python -m bench.priority`: queries beside an ingest load, with and without priority classes, on one server.

Four loads on one embedserve server, one after another:

- interactive alone: `--interactive-clients` closed-loop clients, one `short` text each;
- bulk alone: `--bulk-clients` clients, `--bulk-items` `mixed` texts each, sent with `X-Priority: bulk`;
- both at once, the bulk requests marked `X-Priority: bulk` (what an ingest job should send);
- both at once, unmarked: every request in one class, as before priority classes existed.

What to read: the interactive p99 with bulk running against the interactive p99 alone (the goal: <= 1.5x), and
all items answered per second against bulk alone (the goal: >= 0.9x), marked and unmarked, in one run.
Loopback only; each load is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.ceiling import default_model_dir
from bench.run import _module, _run_json
from bench.servers import Server, contender, free_port

MODEL_ID = "all-MiniLM-L6-v2"
BULK_HEADER = "X-Priority: bulk"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.priority", description=__doc__.splitlines()[0])
    p.add_argument("--interactive-clients", type=int, default=16)
    p.add_argument("--bulk-clients", type=int, default=4)
    p.add_argument("--bulk-items", type=int, default=32, help="texts per bulk request")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--model-dir", default=None)
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    return p


def _load(port: int, args: argparse.Namespace, *, bulk: bool, marked: bool = True) -> list[str]:
    options: dict[str, object] = dict(
        url=f"http://127.0.0.1:{port}/v1/embeddings",
        model=MODEL_ID,
        workload="mixed" if bulk else "short",
        concurrency=args.bulk_clients if bulk else args.interactive_clients,
        items=args.bulk_items if bulk else 1,
        duration=args.duration,
        warmup=args.warmup,
        request_timeout=120,
        seed=1 if bulk else 0,
    )
    argv = _module("bench.loadgen", **options)
    return [*argv, "--header", BULK_HEADER] if bulk and marked else argv


def _together(loads: list[list[str]], timeout: float) -> list[dict]:
    with ThreadPoolExecutor(len(loads)) as pool:
        return list(pool.map(lambda argv: _run_json(argv, timeout), loads))


def _summary(interactive: dict, bulk: dict, alone: dict) -> dict:
    total = interactive["items_per_s"] + bulk["items_per_s"]
    p99 = (interactive.get("latency_ms") or {}).get("p99")
    alone_p99 = (alone["interactive"].get("latency_ms") or {}).get("p99")
    return {
        "interactive": interactive,
        "bulk": bulk,
        "items_per_s": round(total, 2),
        "items_over_bulk_alone": round(total / alone["bulk"]["items_per_s"], 3)
        if alone["bulk"]["items_per_s"]
        else None,
        "interactive_p99_over_alone": round(p99 / alone_p99, 2) if p99 and alone_p99 else None,
    }


def measure(args: argparse.Namespace) -> dict:
    port = free_port()
    env = {"EMBEDSERVE_ACCESS_LOG": "false", **dict(item.split("=", 1) for item in args.server_env)}
    spec = contender("embedserve", port, MODEL_ID, args.model_dir or default_model_dir(), [], env)
    timeout = args.warmup + args.duration + 300
    with Server(spec, port) as server:
        server.wait_ready(300)
        alone = {
            "interactive": _run_json(_load(port, args, bulk=False), timeout),
            "bulk": _run_json(_load(port, args, bulk=True), timeout),
        }
        runs = {}
        for marked in (True, False):
            interactive, bulk = _together(
                [_load(port, args, bulk=False), _load(port, args, bulk=True, marked=marked)], timeout
            )
            runs["marked" if marked else "unmarked"] = _summary(interactive, bulk, alone)
    return {"alone": alone, **runs}


def _line(name: str, run: dict) -> str:
    i = run["interactive"]["latency_ms"] or {}
    return (
        f"{name}: interactive p50 {i.get('p50', 0):.0f} ms, p99 {i.get('p99', 0):.0f} ms "
        f"({run['interactive_p99_over_alone']}x alone); items {run['items_per_s']}/s "
        f"({run['items_over_bulk_alone']}x bulk alone)"
    )


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    result = {
        "interactive_clients": args.interactive_clients,
        "bulk_clients": args.bulk_clients,
        "bulk_items": args.bulk_items,
        **measure(args),
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    alone = result["alone"]
    print(
        f"alone: interactive {alone['interactive']['items_per_s']} items/s, p99 "
        f"{(alone['interactive']['latency_ms'] or {}).get('p99', 0):.0f} ms; bulk {alone['bulk']['items_per_s']} items/s",
        file=sys.stderr,
    )
    for name in ("marked", "unmarked"):
        print(_line(name, result[name]), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
