"""LitServe as its docs' OpenAI-embedding example: an `OpenAIEmbeddingSpec` LitAPI with dynamic batching.

Runs in LitServe's own venv (bench/.venv-litserve, `make bench-peers`), so it imports nothing of ours.
Batching as the docs' batching example (`max_batch_size=32, batch_timeout=0.01`), sentence-transformers
on the CPU. One difference from the docs: no `client.py` is written into the working directory.
"""

from __future__ import annotations

import argparse

import litserve as ls
from sentence_transformers import SentenceTransformer


class EmbeddingAPI(ls.LitAPI):
    """`predict` gets the batch's texts (one per request) and returns one vector per text."""

    def __init__(self, model_dir: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.model_dir = model_dir

    def setup(self, device: str) -> None:
        self.model = SentenceTransformer(self.model_dir, device=device)

    def predict(self, inputs: list[str]):  # type: ignore[no-untyped-def]
        return self.model.encode(inputs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args()
    api = EmbeddingAPI(args.model_dir, max_batch_size=32, batch_timeout=0.01, spec=ls.OpenAIEmbeddingSpec())
    server = ls.LitServer(api, accelerator="cpu")
    server.run(host=args.host, port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
