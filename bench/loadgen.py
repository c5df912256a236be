"""Closed-loop load generator: N clients, each with one request in flight on its own keep-alive connection.

Run as its own process (`python -m bench.loadgen ...`, prints one JSON object) so that its CPU cost is
measured apart from the orchestrator and reported as `loadgen_cpu_fraction`. It shares a 2-core machine
with the server, so it must stay cheap: request bytes are serialized before the clock starts, responses
are read as raw HTTP/1.1 (status line, Content-Length, body) with a byte count of embeddings as the only
check, and uvloop is used when installed. Traffic goes to loopback only.

The warm-up lasts `--warmup` seconds and, beyond that, until every client has had an answer (at most
`--warmup-max`): a load whose requests take longer than the warm-up (32 texts each behind a backlog of 128 clients)
is measured once it runs steadily, not while its first requests are still queued.

What a load counts is what completed inside its measured window: every answer that arrives between the end of the
warm-up and the end of the window, whenever its request was sent. A request longer than the window (a 32-text
request behind a backlog can take 20 s) still counts when it ends inside it, and throughput is items answered over
the window's length, so a run whose requests outlast it does not count a few early ones over a stretched clock.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

from bench.procfs import machine_busy_seconds, own_cpu_seconds, tree_cpu_seconds
from bench.workloads import WORKLOADS, generate

_EMBEDDING_KEY = b'"embedding":'  # once per returned vector; `"object":"embedding"` does not match
_MULTIVECTOR_KEY = b'"object":"embeddings"'  # once per text of a /v1/multi-vector answer


@dataclass(frozen=True)
class BodyFormat:
    """How a server's embeddings route is asked (model, texts -> JSON body) and how many vectors an answer holds."""

    encode: Callable[[str, list[str]], bytes]
    count: Callable[[bytes], int]


BODY_FORMATS = {
    # OpenAI's contract: `input` a bare string for one text, a list for several.
    "openai": BodyFormat(
        lambda model, texts: orjson.dumps({"model": model, "input": texts[0] if len(texts) == 1 else texts}),
        lambda body: body.count(_EMBEDDING_KEY),
    ),
    # Jina's /v1/multi-vector: per text its rows, as JSON floats or base64 float32 rows.
    "multivector": BodyFormat(
        lambda model, texts: orjson.dumps({"model": model, "input": texts}),
        lambda body: body.count(_MULTIVECTOR_KEY),
    ),
    "multivector-base64": BodyFormat(
        lambda model, texts: orjson.dumps({"model": model, "input": texts, "embedding_type": "base64"}),
        lambda body: body.count(_MULTIVECTOR_KEY),
    ),
    # A batchable `encode(sentences: list[str])` as BentoML serves it: `{"sentences": [...]}` -> `[[...], ...]`.
    "sentences": BodyFormat(
        lambda model, texts: orjson.dumps({"sentences": texts}),
        lambda body: body.count(b"[") - 1,
    ),
}


@dataclass
class _Stats:
    latencies: list[float] = field(default_factory=list)
    items: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    issued: int = 0
    last_done: float = 0.0
    bytes: int = 0
    """Of the answers counted: what a client reads, per output format."""


@dataclass(frozen=True)
class Load:
    host: str
    port: int
    path: str
    concurrency: int
    items: int
    duration: float
    warmup: float
    max_requests: int | None
    request_timeout: float
    verify: bool
    retry_429: tuple[float, float] | None = None
    """Impatient clients: after a 429, retry after a random delay in this range, whatever Retry-After says."""
    body: str = "openai"
    """The request and answer shape, a key of BODY_FORMATS."""
    headers: tuple[str, ...] = ()
    """Extra request header lines ("Name: value"), e.g. X-Priority: bulk."""
    warmup_max: float = 60.0
    """The longest the warm-up waits, past `warmup`, for every client's first answer."""


@dataclass
class _Window:
    """The measured window, set once the warm-up ends; None before."""

    t0: float | None = None
    t_end: float | None = None
    answered: set[int] = field(default_factory=set)
    """Clients that have had an answer (any status): the warm-up waits for all of them."""


def loopback_target(url: str) -> tuple[str, int, str]:
    """(host, port, path) of `url`, refusing anything that is not loopback: the bench never leaves the host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{url}: only loopback targets are allowed")
    return host, parts.port or 80, parts.path or "/v1/embeddings"


def build_requests(
    host: str,
    port: int,
    path: str,
    model: str,
    texts: list[str],
    items: int,
    body: str = "openai",
    headers: tuple[str, ...] = (),
) -> list[bytes]:
    """Complete HTTP/1.1 requests, `items` consecutive texts each, in the body format named, with `headers`."""
    extra = "".join(f"{line}\r\n" for line in headers)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}Content-Type: application/json\r\nContent-Length: "
    encode = BODY_FORMATS[body].encode
    requests = []
    for start in range(0, len(texts) - items + 1, items):
        payload = encode(model, texts[start : start + items])
        requests.append(f"{head}{len(payload)}\r\n\r\n".encode() + payload)
    if not requests:
        raise ValueError("fewer texts than items per request")
    return requests


def header_value(head: bytes, name: bytes) -> bytes | None:
    """The value of header `name` in a response head whose names are lower-case, or None."""
    start = head.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    return head[start : head.index(b"\r\n", start)].strip()


async def _client(load: Load, number: int, requests: Iterator[bytes], window: _Window, stats: _Stats) -> None:
    count = BODY_FORMATS[load.body].count
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while load.max_requests is None or stats.issued < load.max_requests:
            now = time.perf_counter()
            if window.t_end is not None and now >= window.t_end:
                break
            measured = window.t0 is not None and now >= window.t0  # for errors and max_requests: sent in the window
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(load.host, load.port)
                except OSError:
                    if measured:
                        stats.errors["connect"] += 1
                    await asyncio.sleep(0.1)
                    continue
            assert reader is not None
            if measured:
                stats.issued += 1
            start = time.perf_counter()
            try:
                writer.write(next(requests))
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                status = int(head[9:12])
                body = await reader.readexactly(int(header_value(head, b"content-length") or b"x"))
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                if measured:  # ValueError: a malformed status line or no Content-Length
                    stats.errors["io"] += 1
                writer.close()
                writer = None
                await asyncio.sleep(0.05)
                continue
            done = time.perf_counter()
            window.answered.add(number)
            if header_value(head, b"connection") == b"close":
                writer.close()
                writer = None
            if window.t0 is None or done < window.t0 or done > window.t_end:  # type: ignore[operator]
                continue  # answered during the warm-up, or after the window
            if status != 200:
                stats.errors[str(status)] += 1
                if status == 429 and load.retry_429 is not None:
                    await asyncio.sleep(random.uniform(*load.retry_429))
                elif status == 429:  # back off as a well-behaved client would, capped to keep the run moving
                    await asyncio.sleep(min(float(header_value(head, b"retry-after") or 1), 1.0))
                continue
            if load.verify and count(body) != load.items:
                stats.errors["bad_body"] += 1
                continue
            stats.latencies.append(done - start)
            stats.items += load.items
            stats.bytes += len(body)
            stats.last_done = done
    finally:
        if writer is not None:
            writer.close()


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list, in ms."""
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] * 1000


async def run_load(load: Load, requests: list[bytes], server_pid: int | None = None) -> dict:
    """Drive `load` and summarize it; nothing outlives warmup + duration + request_timeout."""
    stats = _Stats()
    cycle = itertools.cycle(requests)
    window = _Window()
    started = time.perf_counter()
    tasks = [asyncio.ensure_future(_client(load, n, cycle, window, stats)) for n in range(load.concurrency)]
    await asyncio.sleep(load.warmup)
    give_up = started + load.warmup + load.warmup_max
    while (
        len(window.answered) < load.concurrency and time.perf_counter() < give_up and not all(t.done() for t in tasks)
    ):
        await asyncio.sleep(0.05)  # the warm-up's end needs no precision; the window is timed from it
    window.t0 = time.perf_counter()
    window.t_end = window.t0 + load.duration
    wall0, cpu0, machine0 = time.perf_counter(), own_cpu_seconds(), machine_busy_seconds()
    server0 = tree_cpu_seconds(server_pid) if server_pid else None
    _, pending = await asyncio.wait(tasks, timeout=window.t_end + load.request_timeout - time.perf_counter())
    wall = time.perf_counter() - wall0
    cpu = own_cpu_seconds() - cpu0
    machine = machine_busy_seconds() - machine0
    server1 = tree_cpu_seconds(server_pid) if server_pid else None
    server = server1 - server0 if server0 is not None and server1 is not None else None
    for task in pending:
        task.cancel()
    stats.errors["timeout"] += len(pending)
    await asyncio.gather(*pending, return_exceptions=True)

    # The window, or up to the last answer where a request count ended it early.
    duration = load.duration if load.max_requests is None else max(stats.last_done - wall0, 1e-9)
    ordered = sorted(stats.latencies)
    return {
        "concurrency": load.concurrency,
        "items_per_request": load.items,
        "requests": len(ordered),
        "items": stats.items,
        "errors": {k: v for k, v in stats.errors.items() if v},
        "warmup_s": round(window.t0 - started, 3),
        "duration_s": round(duration, 3),
        "requests_per_s": round(len(ordered) / duration, 2),
        "items_per_s": round(stats.items / duration, 2),
        "answer_bytes_per_item": round(stats.bytes / stats.items) if stats.items else None,
        "latency_ms": {
            "p50": round(_percentile(ordered, 50), 2),
            "p90": round(_percentile(ordered, 90), 2),
            "p99": round(_percentile(ordered, 99), 2),
            "max": round(ordered[-1] * 1000, 2),
            "mean": round(sum(ordered) / len(ordered) * 1000, 2),
        }
        if ordered
        else None,
        "loadgen_cpu_fraction": round(cpu / wall, 3),
        "server_cpu_cores": round(server / wall, 3) if server is not None else None,
        # whatever else ran on the machine meanwhile: another test suite would skew every figure above
        "other_cpu_cores": round(max(0.0, machine - cpu - (server or 0.0)) / wall, 3),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000/v1/embeddings", help="loopback only")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="the request's `model` field")
    p.add_argument("--workload", choices=WORKLOADS, default="mixed")
    p.add_argument("--concurrency", type=int, default=32, help="clients, one request in flight each")
    p.add_argument("--items", type=int, default=1, help="texts per request")
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first, on the same connections")
    p.add_argument(
        "--warmup-max",
        type=float,
        default=60.0,
        help="past --warmup, the most seconds to wait for every client's first answer before measuring",
    )
    p.add_argument("--requests", type=int, help="stop after this many measured requests (duration still caps)")
    p.add_argument(
        "--request-timeout", type=float, default=30.0, help="grace after the duration for in-flight requests"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=4096, help="distinct texts, cycled through")
    p.add_argument(
        "--server-pid", type=int, help="also report this process's CPU use (children included) over the measured window"
    )
    p.add_argument("--body", choices=BODY_FORMATS, default="openai", help="request/answer shape of the route")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip counting embeddings in each body")
    p.add_argument(
        "--header", action="append", default=[], metavar="'NAME: VALUE'", help="an extra request header; repeatable"
    )
    p.add_argument(
        "--retry-429",
        metavar="LO:HI",
        help="retry a 429 after a random LO..HI seconds, ignoring Retry-After (a retry storm's clients)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.concurrency < 1 or args.items < 1 or args.duration <= 0:
        raise SystemExit("concurrency and items must be >= 1, duration > 0")
    host, port, path = loopback_target(args.url)
    load = Load(
        host,
        port,
        path,
        args.concurrency,
        args.items,
        args.duration,
        args.warmup,
        args.requests,
        args.request_timeout,
        args.verify,
        tuple(float(x) for x in args.retry_429.split(":")) if args.retry_429 else None,  # type: ignore[arg-type]
        args.body,
        tuple(args.header),
        args.warmup_max,
    )
    texts = generate(args.workload, args.pool, args.seed)
    requests = build_requests(host, port, path, args.model, texts, args.items, args.body, load.headers)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run_load(load, requests, args.server_pid))
    else:
        result = uvloop.run(run_load(load, requests, args.server_pid))
    result = {"workload": args.workload, **result}
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
