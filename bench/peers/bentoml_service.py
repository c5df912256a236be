"""BentoML as its docs show a sentence-transformers service: a batchable `encode` over a list of sentences.

Runs in BentoML's own venv (bench/.venv-bentoml, `make bench-peers`), so it imports nothing of ours; started
as `bentoml serve bentoml_service:SentenceTransformers --port N` from bench/peers. The model folder comes
from EMBED_MODEL_DIR (`bentoml serve` takes no arguments of the service's). The route is BentoML's own:
`POST /encode` with `{"sentences": [...]}`, answered with a JSON list of vectors; readiness is `/readyz`.
"""

from __future__ import annotations

import os

import bentoml
import numpy as np


@bentoml.service(traffic={"timeout": 60})
class SentenceTransformers:
    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(os.environ["EMBED_MODEL_DIR"], device="cpu")

    @bentoml.api(batchable=True)
    def encode(self, sentences: list[str]) -> np.ndarray:
        """Requests' sentences are concatenated into one batch (BentoML's adaptive batching) and split back."""
        return self.model.encode(sentences)
