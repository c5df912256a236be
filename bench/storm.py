"""`python -m bench.storm`: useful throughput under a retry storm, against the same server at capacity.

One embedserve server (fresh per `--repo`, so a checkout of an older commit can be measured beside this
one in the same run: `servers.checkout_env` makes the server import that checkout), two loads on it:

- capacity: `--clients` closed-loop clients, polite (a 429 waits its Retry-After, at most 1 s);
- storm: ten times as many clients, impatient: a 429 is retried after a random 0.2-1 s.

What a server should show: under the storm, useful throughput (items answered 200 per second) stays
near the capacity figure (the goal: >= 0.8x), because refusing costs little; and no admitted request
runs into its deadline (no 504). The queue bound is set small (`--max-queue-items`) so the storm is
refused rather than queued for minutes. Loopback only; each load is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.ceiling import default_model_dir
from bench.run import _module, _run_json
from bench.servers import REPO, Server, checkout_env, contender, free_port
from bench.workloads import WORKLOADS

MODEL_ID = "all-MiniLM-L6-v2"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, action="append", help="checkouts to serve from (repeatable; default: this one)")
    p.add_argument("--workload", choices=WORKLOADS, default="mixed")
    p.add_argument("--clients", type=int, default=32, help="clients at capacity; the storm has ten times as many")
    p.add_argument("--items", type=int, default=4, help="texts per request")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--max-queue-items", type=int, default=256, help="the server's queue bound, in texts")
    p.add_argument("--model-dir", default=None)
    p.add_argument("--out", type=Path, help="also write the JSON here")
    return p


def _load(port: int, args: argparse.Namespace, clients: int, retry: str | None) -> dict:
    options = dict(
        url=f"http://127.0.0.1:{port}/v1/embeddings",
        model=MODEL_ID,
        workload=args.workload,
        concurrency=clients,
        items=args.items,
        duration=args.duration,
        warmup=args.warmup,
        request_timeout=60,
    )
    if retry:
        options["retry_429"] = retry
    return _run_json(_module("bench.loadgen", **options), timeout=args.warmup + args.duration + 180)


def measure(repo: Path, args: argparse.Namespace, model_dir: str) -> dict:
    port = free_port()
    env = {"EMBEDSERVE_MAX_QUEUE_ITEMS": str(args.max_queue_items), "EMBEDSERVE_ACCESS_LOG": "false"}
    with checkout_env(repo) as code:
        spec = contender("embedserve", port, MODEL_ID, model_dir, [], {**env, **code})
        with Server(spec, port, cwd=repo) as server:
            server.wait_ready(300)
            capacity = _load(port, args, args.clients, None)
            storm = _load(port, args, args.clients * 10, "0.2:1.0")
    ratio = storm["items_per_s"] / capacity["items_per_s"] if capacity["items_per_s"] else None
    return {
        "repo": str(repo),
        "capacity": capacity,
        "storm": storm,
        "storm_over_capacity": round(ratio, 3) if ratio is not None else None,
        "deadline_misses": storm["errors"].get("504", 0),
    }


def _line(row: dict) -> str:
    c, s = row["capacity"], row["storm"]
    return (
        f"{row['repo']}: capacity {c['items_per_s']} items/s (p50 {c['latency_ms']['p50']:.0f} ms), "
        f"storm {s['items_per_s']} items/s (p50 {s['latency_ms']['p50']:.0f} ms, p99 {s['latency_ms']['p99']:.0f} ms) "
        f"= {row['storm_over_capacity']}x; 429s {s['errors'].get('429', 0)}, 504s {row['deadline_misses']}"
    )


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    model_dir = args.model_dir or default_model_dir()
    rows = [measure(repo.resolve(), args, model_dir) for repo in (args.repo or [REPO])]
    result = {"workload": args.workload, "clients": args.clients, "items": args.items, "runs": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        print(_line(row), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
