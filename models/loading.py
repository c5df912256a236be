"""Turning a ModelSpec into a warmed, ready model, and recording what that cost."""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass

from embedserve.models.backend import backend_entry, build_runner
from embedserve.models.classifier import Classifier
from embedserve.models.embedder import Embedder
from embedserve.models.errors import ModelLoadError
from embedserve.models.memory import rss_bytes
from embedserve.models.reranker import Reranker
from embedserve.models.sources import resolve_source
from embedserve.models.spec import AUTO_BACKEND, ModelSpec

log = logging.getLogger("embedserve.models")

_WARMUP_TEXTS = ["warm up", "A longer sentence warms up the kernels for a few more positions of the sequence."]
_WARMUP_QUERY = "what warms up a model?"


@dataclass(slots=True)
class LoadedModel:
    spec: ModelSpec
    model: Embedder | Reranker | Classifier
    load_seconds: float
    memory_bytes: int


def load_model(
    spec: ModelSpec, *, max_batch_tokens: int | None = None, max_batch_size: int | None = None
) -> LoadedModel:
    """Loads and warms one model (blocking: call it from a thread).

    A runner that compiles prepares every shape it will be given here, before it is served; the
    batcher's limits for the model (`max_batch_tokens`, `max_batch_size`) bound those shapes. Without
    them nothing is prepared ahead, and a compiled model runs uncompiled until it is."""
    if spec.backend == AUTO_BACKEND:
        raise ModelLoadError(
            f"model {spec.id!r}: backend 'auto' is resolved to a backend before loading "
            "(embedserve.quantize.served_export.resolve_backend, as the server does)"
        )
    started, rss_before = time.perf_counter(), rss_bytes()
    source = resolve_source(spec.source)
    log.info(
        "model loading",
        extra={"model": spec.id, "kind": spec.kind, "source": source, "backend": spec.backend, "device": spec.device},
    )
    import_seconds = _import_backend(spec.backend)
    weights_started = time.perf_counter()
    model = _build(spec, source)
    warm_started = time.perf_counter()
    warmed = None
    if max_batch_tokens is not None and max_batch_size is not None:
        warmed = model.runner.warm(max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size)
    if isinstance(model, Reranker):
        model.runner.run(model.tokenize(_WARMUP_QUERY, _WARMUP_TEXTS))
    else:
        model.runner.run(model.tokenize(_WARMUP_TEXTS))
    done = time.perf_counter()
    loaded = LoadedModel(spec, model, done - started, max(0, rss_bytes() - rss_before))
    info = model.info
    log.info(
        "model loaded",
        extra={
            "model": spec.id,
            "import_seconds": round(import_seconds, 3),
            "weights_seconds": round(warm_started - weights_started, 3),
            "warmup_seconds": round(done - warm_started, 3),  # compiling included, when compiled
            "source": source,
            "backend": info.backend,
            "device": info.device,
            "dtype": info.dtype,
            "dimension": info.width,
            "max_length": info.max_length,
            "load_seconds": round(loaded.load_seconds, 3),
            "memory_mb": round(loaded.memory_bytes / 2**20, 1),
            **(
                {
                    "compiled_lengths": warmed.warmed,
                    "compile_backend": warmed.backend,
                    "compile_lengths": list(warmed.lengths),
                    "compile_seconds": round(warmed.seconds, 3),
                }
                if warmed is not None
                else {}
            ),
        },
    )
    return loaded


def _import_backend(backend: str) -> float:
    """Imports the backend's libraries; the seconds it took (the first model pays, ~0 for later ones)."""
    started = time.perf_counter()
    for module in backend_entry(backend).packages:
        importlib.import_module(module)
    return time.perf_counter() - started


_KINDS = {"embed": Embedder, "rerank": Reranker, "classify": Classifier}


def _build(spec: ModelSpec, source: str) -> Embedder | Reranker | Classifier:
    """The runner for the spec's backend and kind (models.backend's registry), wrapped for its kind."""
    return _KINDS[spec.kind](build_runner(spec.backend, spec.kind, spec, source))
