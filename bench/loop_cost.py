"""`python -m bench.loop_cost`: the event loop's CPU for one embedding request, measured in-process.

Beside the model's passes on a small machine, what a request costs the event loop bounds how many a server answers
(bench/README.md, "Where a short request's time goes"). The load generator's figures mix that cost with the
sockets, the kernel and the run-to-run noise of the passes; this takes it apart. The server's own app (`create_app`,
from the settings a server reads: `EMBEDSERVE_*` and the options below) is called as ASGI, without sockets, by
`--clients` concurrent callers, each sending `POST /v1/embeddings` with one text of the workload as soon as its last
answer came. The figure is the loop thread's own CPU time (`time.thread_time`) over the requests answered: the
routes, middleware, tokenizing, batcher and answer, but not the model's passes (their worker threads) and not what
uvicorn and the kernel add for HTTP over loopback (~30 µs a request for a bare uvicorn app on the AMD EPYC of
bench/README.md). The process's CPU a request, passes included, is printed beside it. As `embedserve serve` does, what
loading made is frozen for the garbage collector (server/collector.py): collections walk only what requests make.

`--no-http` leaves the app out: the callers call the served model's `embed` (tokenizing, the batcher, the passes)
straight, as the route does. Its requests/s is what the batcher and the model give these callers with no HTTP round
trip at all, the served path's bound in this process (bench/README.md, "What bounds `short` 32 × 1").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.ceiling import default_model_dir
from bench.run import cpu_model, isa_flags
from bench.workloads import WORKLOADS, generate

MODEL_ID = "all-MiniLM-L6-v2"


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/embeddings",
        "raw_path": b"/v1/embeddings",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _call(app: Any, body: bytes) -> int:
    """One request through the app; its status. The client stays connected until the answer is sent."""
    status = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # connected: no disconnect arrives while the request runs
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(body), receive, send)
    return status


async def _embed(served: Any, text: str, seconds: float) -> int | str:
    """One text straight into the served model, as the route calls it; 200 when answered, else the error's name."""
    from embedserve.server.serving.seam import Call, EmbedParams

    try:
        await served.embed([text], EmbedParams(), Call(within=seconds))
    except Exception as exc:  # counted, as a status would be
        return type(exc).__name__
    return 200


async def measure(
    settings: Any, model: str, texts: list[str], clients: int, warmup: int, *, http: bool = True
) -> dict[str, Any]:
    """The first `warmup` texts are answered unmeasured, the rest measured; every text is one request, through the
    app, or (`http` False) straight into the served model."""
    from embedserve.server.app import create_app
    from embedserve.server.collector import freeze_loaded_objects

    app = create_app(settings)
    app.state.host.on_loaded = freeze_loaded_objects  # as `embedserve serve` does: collections skip what loaded
    async with app.router.lifespan_context(app):  # the models load, as under a server
        await app.state.host.wait_loaded()
        if not http:
            try:
                served = app.state.host.get(model, "embed")
            except Exception as exc:  # the model asked is not served here: nothing to measure
                raise SystemExit(f"not every request was answered 200: {model!r} is not served ({exc})") from None
            seconds = settings.request_timeout
            return await _measure(lambda text: _embed(served, text, seconds), texts, clients, warmup)
        return await _measure(lambda body: _call(app, body), _bodies(model, texts), clients, warmup)


def _bodies(model: str, texts: list[str]) -> list[bytes]:
    return [orjson.dumps({"model": model, "input": text}) for text in texts]


async def _measure(ask: Any, requests: list[Any], clients: int, warmup: int) -> dict[str, Any]:
    """`ask(request)` for each request by `clients` concurrent callers, each asking again as soon as it is answered;
    its status counted."""
    statuses: dict[Any, int] = {}

    async def run(share: list[Any]) -> None:
        queue = iter(share)

        async def client() -> None:
            for request in queue:
                status = await ask(request)
                statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(client() for _ in range(clients)))

    await run(requests[:warmup])
    statuses.clear()
    thread0, process0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
    await run(requests[warmup:])
    thread1, process1, wall1 = time.thread_time(), time.process_time(), time.perf_counter()
    answered = sum(statuses.values())
    if set(statuses) != {200}:  # an error's path is not what this measures
        raise SystemExit(f"not every request was answered 200: {statuses}")
    return {
        "requests": answered,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "clients": clients,
        "loop_cpu_us_per_request": round((thread1 - thread0) / answered * 1e6, 1),
        "process_cpu_us_per_request": round((process1 - process0) / answered * 1e6, 1),
        "requests_per_s": round(answered / (wall1 - wall0), 1),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.loop_cost", description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=WORKLOADS, default="short")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=5000, help="measured requests, one text each")
    p.add_argument("--warmup", type=int, default=500, help="requests answered before measuring")
    p.add_argument("--model-dir", default=None, help="default: the bundled MiniLM")
    p.add_argument("--model-id", default=MODEL_ID, help="the model served from --model-dir, and the one asked")
    p.add_argument("--models-file", type=Path, help="serve this models file instead of --model-dir")
    p.add_argument("--no-access-log", dest="access_log", action="store_false")
    p.add_argument(
        "--no-http", dest="http", action="store_false", help="call the served model straight, without the app"
    )
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    from embedserve.server.config.settings import Settings
    from embedserve.server.telemetry.logs import configure_logging

    chosen: dict[str, Any] = {"access_log": args.access_log, "cache_bytes": 0}
    if args.models_file:
        chosen["models_file"] = args.models_file
    else:
        chosen["models"] = [f"{args.model_id}={args.model_dir or default_model_dir()}"]
    settings = Settings(**chosen)
    # The access log is written as a server writes it, to a file nobody reads instead of the terminal.
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    stderr, sys.stderr = sys.stderr, devnull
    try:
        configure_logging(settings.log_level, settings.log_json)
    finally:
        sys.stderr = stderr
    texts = generate(args.workload, args.warmup + args.requests, seed=args.seed)
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # as uvicorn: uvloop where installed
        run = asyncio.run
    result = run(measure(settings, args.model_id, texts, args.clients, args.warmup, http=args.http))
    result = {
        "cpu": cpu_model(),
        "isa_flags": isa_flags(),
        "workload": args.workload,
        "http": args.http,
        "access_log": args.access_log,
        **result,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
