"""Turning a ModelSpec into a warmed, ready model, and recording what that cost."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from models.embedder import Embedder
from models.memory import rss_bytes
from models.sources import resolve_source
from models.spec import ModelSpec

log = logging.getLogger("embedserve.models")

_WARMUP_TEXTS = ["warm up", "A longer sentence warms up the kernels for a few more positions of the sequence."]


@dataclass(slots=True)
class LoadedModel:
    spec: ModelSpec
    embedder: Embedder
    load_seconds: float
    memory_bytes: int


def load_model(spec: ModelSpec) -> LoadedModel:
    """Loads and warms one model (blocking: call it from a thread)."""
    started, rss_before = time.perf_counter(), rss_bytes()
    source = resolve_source(spec.source)
    if spec.backend == "torch":
        from models.torch_backend import TorchEmbeddingRunner

        runner = TorchEmbeddingRunner(spec, source)
    else:  # pragma: no cover - the spec's Literal admits only known backends
        raise ValueError(f"unknown backend {spec.backend!r}")
    embedder = Embedder(runner)
    runner.run(embedder.tokenize(_WARMUP_TEXTS))
    loaded = LoadedModel(spec, embedder, time.perf_counter() - started, max(0, rss_bytes() - rss_before))
    info = runner.info
    log.info(
        "model loaded",
        extra={
            "model": spec.id,
            "source": source,
            "backend": info.backend,
            "device": info.device,
            "dtype": info.dtype,
            "dimension": info.dimension,
            "max_length": info.max_length,
            "load_seconds": round(loaded.load_seconds, 3),
            "memory_mb": round(loaded.memory_bytes / 2**20, 1),
        },
    )
    return loaded
