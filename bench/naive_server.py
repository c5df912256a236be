"""The "naive server" contender: a hand-written FastAPI wrapper that calls `model.encode` once per request.

This is the baseline embedserve has to beat, written the way such wrappers usually are: a sync route
(FastAPI runs it in its thread pool, so concurrent requests run concurrent, unbatched encodes), a
Pydantic request model, vectors returned through FastAPI's default JSON encoding, uvicorn defaults.
It speaks the same OpenAI shape and `/health/ready` route as embedserve so the same load generator
drives both; it loads the model before binding the port, so "ready" is simply "accepting connections".

    python -m bench.naive_server --port 8001 --model-dir /path/to/model
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer


class EmbeddingRequest(BaseModel):
    model: str
    input: str | list[str]


def create_app(model: SentenceTransformer) -> FastAPI:
    app = FastAPI()

    @app.get("/health/ready")
    def ready() -> dict:
        return {"status": "ready"}

    @app.post("/v1/embeddings")
    def embeddings(request: EmbeddingRequest) -> dict:
        texts = [request.input] if isinstance(request.input, str) else request.input
        vectors = model.encode(texts)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)],
            "model": request.model,
            "usage": {"prompt_tokens": 0, "total_tokens": 0},  # wrappers like this rarely count tokens
        }

    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.naive_server", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--model-dir", required=True, help="a sentence-transformers model folder")
    args = p.parse_args(argv)
    model = SentenceTransformer(args.model_dir, device="cpu")
    uvicorn.run(create_app(model), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
