"""Small stand-in upstreams for what has no real server here, run on loopback in a thread.

- Ollama's `/api/embed` and `/api/version`, answering exactly the documented shapes
  (https://github.com/ollama/ollama/blob/main/docs/api.md#generate-embeddings); no Ollama runs here.
- An OpenAI-compatible generation server (`/v1/chat/completions`, `/v1/completions`,
  `/v1/images/generations`) whose streamed answers come as spaced-out server-sent events.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support import free_port


@dataclass
class Observed:
    """What a stand-in saw: bodies received and the most calls it had in flight at once."""

    bodies: list[dict] = field(default_factory=list)
    streamed: list[int] = field(default_factory=list)
    """Per streamed answer, once it ended: how many chunks went out (CHUNKS + 1 with the [DONE] line)."""
    in_flight: int = 0
    most_in_flight: int = 0


def fake_vector(text: str, dimensions: int = 16) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    row = np.random.default_rng(seed).standard_normal(dimensions)
    return (row / np.linalg.norm(row)).tolist()


def ollama_app(observed: Observed, delay: float = 0.0) -> Starlette:
    async def embed(request: Request) -> Response:
        body = await request.json()
        observed.bodies.append(body)
        observed.in_flight += 1
        observed.most_in_flight = max(observed.most_in_flight, observed.in_flight)
        try:
            await asyncio.sleep(delay)
        finally:
            observed.in_flight -= 1
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        return JSONResponse(
            {
                "model": body["model"],
                "embeddings": [fake_vector(t) for t in texts],
                "total_duration": 14143917,
                "load_duration": 1019500,
                "prompt_eval_count": sum(len(t.split()) for t in texts),
            }
        )

    async def version(request: Request) -> Response:
        return JSONResponse({"version": "0.12.6"})

    return Starlette(routes=[Route("/api/embed", embed, methods=["POST"]), Route("/api/version", version)])


CHUNKS = 5
CHUNK_GAP = 0.4


def generation_app(observed: Observed) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        observed.bodies.append(body)
        if body.get("model") == "refuse-me":
            return JSONResponse({"error": {"message": "no such model", "type": "invalid_request_error"}}, 404)
        if body.get("stream"):

            async def events() -> AsyncIterator[bytes]:
                sent = 0
                try:
                    for i in range(CHUNKS):
                        chunk = {
                            "object": "chat.completion.chunk",
                            "model": body["model"],
                            "sent_at": time.time(),
                            "choices": [{"index": 0, "delta": {"content": f"part{i} "}}],
                        }
                        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                        sent += 1
                        await asyncio.sleep(CHUNK_GAP)
                    yield b"data: [DONE]\n\n"
                    sent += 1
                finally:
                    observed.streamed.append(sent)

            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse(
            {
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        )

    async def completions(request: Request) -> Response:
        body = await request.json()
        observed.bodies.append(body)
        return JSONResponse({"object": "text_completion", "model": body["model"], "choices": [{"text": "ok"}]})

    async def images(request: Request) -> Response:
        body = await request.json()
        observed.bodies.append(body)
        return JSONResponse({"created": 1, "data": [{"b64_json": "iVBORw0KGgo="}]})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": []})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/images/generations", images, methods=["POST"]),
            Route("/v1/models", models),
        ]
    )


@contextmanager
def serve_in_thread(app: Starlette) -> Iterator[str]:
    """Runs the app with uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("stand-in server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
