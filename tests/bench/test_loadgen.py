"""The load generator against a stand-in server on loopback: what its window counts, and when the window starts."""

from __future__ import annotations

import asyncio
import functools

from bench.loadgen import Load, run_load

SLOW_FIRST = 0.6  # seconds the stand-in takes to answer each connection's first request
BODY = b'{"data":[{"embedding":[0.0]}]}'


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, never: bool = False) -> None:
    """Answers every request with one vector; a connection's first answer comes SLOW_FIRST seconds late, as a
    request of many texts behind a backlog does (`never`: it never comes)."""
    first = True
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            if first:
                await asyncio.sleep(3600 if never else SLOW_FIRST)
                first = False
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def _drive(warmup: float, warmup_max: float, *, never: bool = False) -> dict:
    server = await asyncio.start_server(functools.partial(_serve, never=never), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    load = Load("127.0.0.1", port, "/v1/embeddings", 4, 1, 0.3, warmup, None, 0.5, True, warmup_max=warmup_max)
    try:
        return await run_load(load, [request])
    finally:
        server.close()
        await server.wait_closed()


def test_the_warm_up_lasts_until_every_client_has_had_an_answer() -> None:
    # A 0.05 s warm-up would measure while every client still waits for its first answer.
    result = asyncio.run(_drive(warmup=0.05, warmup_max=30))
    assert result["warmup_s"] >= SLOW_FIRST
    assert result["errors"] == {} and result["items"] > 0
    assert result["latency_ms"]["max"] < SLOW_FIRST * 1000  # the slow first answers fell in the warm-up


def test_a_server_that_never_answers_ends_the_warm_up_at_its_maximum_and_the_load_in_timeouts() -> None:
    result = asyncio.run(_drive(warmup=0.05, warmup_max=0.2, never=True))
    assert result["warmup_s"] >= 0.25
    assert result["items"] == 0 and result["errors"] == {"timeout": 4}
