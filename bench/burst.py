"""`python -m bench.burst`: a burst of many-text requests at once, and when each one finishes.

A closed loop cannot show in what order a backlog is served: each client sends again when answered, so by
Little's law every request waits about the whole backlog, whatever the order. A burst can. `--requests` requests of
`--items` texts each are sent at the same moment on connections of their own; the figure to read is the median
request's latency over the time the whole burst took (`p50_over_makespan`). Near 1: every request ended with the
backlog, its texts spread over batches formed from everyone's. Near 0.5: requests were answered about in arrival
order, as `EMBEDSERVE_ARRIVAL_WINDOW` makes them.

The same burst runs against one server per `--arrival-window` value (the default compares 0, the whole queue grouped
by length, with the server's default), `--bursts` times each after one warm-up burst. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from bench.ceiling import default_model_dir
from bench.loadgen import BODY_FORMATS, build_requests, header_value
from bench.servers import Server, contender, free_port
from bench.workloads import WORKLOADS, generate

MODEL_ID = "all-MiniLM-L6-v2"


async def _one(port: int, request: bytes, items: int) -> tuple[int, float]:
    """Sends one request on a connection of its own: (status, seconds to its whole answer)."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        body = await reader.readexactly(int(header_value(head, b"content-length") or b"x"))
    finally:
        writer.close()
    status = int(head[9:12])
    if status == 200 and BODY_FORMATS["openai"].count(body) != items:
        status = -1  # a 200 without the vectors asked for
    return status, time.perf_counter() - start


async def burst(port: int, requests: list[bytes], items: int) -> dict:
    """All `requests` at once; the summary of one burst."""
    start = time.perf_counter()
    answers = await asyncio.gather(*(_one(port, request, items) for request in requests))
    makespan = time.perf_counter() - start
    latencies = sorted(seconds for status, seconds in answers if status == 200)
    errors: dict[str, int] = {}
    for status, _ in answers:
        if status != 200:
            errors[str(status)] = errors.get(str(status), 0) + 1
    if not latencies:
        return {"errors": errors}
    p50 = latencies[(len(latencies) - 1) // 2]
    return {
        "makespan_s": round(makespan, 3),
        "items_per_s": round(items * len(latencies) / makespan, 2),
        "first_s": round(latencies[0], 3),
        "p50_s": round(p50, 3),
        "p90_s": round(latencies[int(0.9 * (len(latencies) - 1))], 3),
        "p50_over_makespan": round(p50 / makespan, 3),
        "first_over_makespan": round(latencies[0] / makespan, 3),
        "errors": errors,
    }


def measure(window: int | None, args: argparse.Namespace) -> dict:
    """One server (its arrival window set, or the default for None), one warm-up burst, then `args.bursts`."""
    port = free_port()
    env = {
        "EMBEDSERVE_ACCESS_LOG": "false",
        "EMBEDSERVE_REQUEST_TIMEOUT": str(args.request_timeout),  # the burst's tail waits the whole backlog
        **dict(item.split("=", 1) for item in args.server_env),
    }
    if window is not None:
        env["EMBEDSERVE_ARRIVAL_WINDOW"] = str(window)
    spec = contender(args.contender, port, MODEL_ID, args.model_dir or default_model_dir(), [], env)
    texts = generate(args.workload, args.requests * args.items * (args.bursts + 1), args.seed)
    requests = build_requests("127.0.0.1", port, "/v1/embeddings", MODEL_ID, texts, args.items)
    runs = []
    with Server(spec, port) as server:
        server.wait_ready(300)
        for number in range(args.bursts + 1):
            chunk = requests[number * args.requests : (number + 1) * args.requests]
            result = asyncio.run(burst(port, chunk, args.items))
            if number:  # the first warms the server up
                runs.append(result)
            print(f"  window {window if window is not None else 'default'}: {result}", file=sys.stderr)
    measured = [run for run in runs if "p50_over_makespan" in run]
    return {
        "arrival_window": window if window is not None else "default",
        "bursts": runs,
        "median_p50_over_makespan": statistics.median(run["p50_over_makespan"] for run in measured)
        if measured
        else None,
        "median_items_per_s": statistics.median(run["items_per_s"] for run in measured) if measured else None,
    }


def _window(value: str) -> int | None:
    return None if value == "default" else int(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__.splitlines()[0])
    p.add_argument("--contender", default="embedserve", choices=("embedserve", "embedserve-torch"))
    p.add_argument("--workload", choices=WORKLOADS, default="mixed")
    p.add_argument("--requests", type=int, default=128, help="requests in one burst, each on its own connection")
    p.add_argument("--items", type=int, default=32, help="texts per request")
    p.add_argument("--bursts", type=int, default=3, help="measured bursts per server, after one warm-up burst")
    p.add_argument(
        "--arrival-window",
        type=_window,
        action="append",
        help="EMBEDSERVE_ARRIVAL_WINDOW of a server to measure, or `default`; repeatable (default: 0 and default)",
    )
    p.add_argument("--request-timeout", type=float, default=300.0, help="the server's EMBEDSERVE_REQUEST_TIMEOUT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-dir", default=None)
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    windows = args.arrival_window or [0, None]
    result = {
        "contender": args.contender,
        "workload": args.workload,
        "requests": args.requests,
        "items": args.items,
        "servers": [measure(window, args) for window in windows],
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    for server in result["servers"]:
        print(
            f"window {server['arrival_window']}: p50 / makespan {server['median_p50_over_makespan']}, "
            f"{server['median_items_per_s']} items/s (medians of {len(server['bursts'])} bursts)",
            file=sys.stderr,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
