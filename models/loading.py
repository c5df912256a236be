"""Turning a ModelSpec into a warmed, ready model, and recording what that cost."""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass

from models.embedder import Embedder
from models.memory import rss_bytes
from models.preflight import BACKEND_PACKAGES
from models.reranker import Reranker
from models.sources import resolve_source
from models.spec import ModelSpec

log = logging.getLogger("embedserve.models")

_WARMUP_TEXTS = ["warm up", "A longer sentence warms up the kernels for a few more positions of the sequence."]
_WARMUP_QUERY = "what warms up a model?"


@dataclass(slots=True)
class LoadedModel:
    spec: ModelSpec
    model: Embedder | Reranker
    load_seconds: float
    memory_bytes: int


def load_model(
    spec: ModelSpec, *, max_batch_tokens: int | None = None, max_batch_size: int | None = None
) -> LoadedModel:
    """Loads and warms one model (blocking: call it from a thread).

    A compiled torch model compiles every shape it will be given here, before it is served; the
    batcher's limits for the model (`max_batch_tokens`, `max_batch_size`) bound those shapes, and
    default to the batcher's defaults on accelerators."""
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
    warm = getattr(model.runner, "warm", None)
    compiled = warm(max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size) if warm else None
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
            "dimension": info.dimension,
            "max_length": info.max_length,
            "load_seconds": round(loaded.load_seconds, 3),
            "memory_mb": round(loaded.memory_bytes / 2**20, 1),
            **(
                {
                    "compiled_lengths": len(compiled.warmed),
                    "compile_backend": str(compiled.backend),
                    "compile_lengths": compiled.lengths,
                    "compile_seconds": round(compiled.warm_seconds, 3),
                }
                if compiled is not None
                else {}
            ),
        },
    )
    return loaded


def _import_backend(backend: str) -> float:
    """Imports the backend's libraries; the seconds it took (the first model pays, ~0 for later ones)."""
    started = time.perf_counter()
    for module in BACKEND_PACKAGES[backend][0]:
        importlib.import_module(module)
    return time.perf_counter() - started


def _build(spec: ModelSpec, source: str) -> Embedder | Reranker:
    """The runner for the spec's backend and kind; each backend's imports stay inside its branch,
    so a server of ONNX models never imports torch."""
    if spec.backend in ("onnx", "onnx-int8"):
        from models.onnx_backend import OnnxEmbeddingRunner, OnnxRerankRunner

        if spec.kind == "rerank":
            return Reranker(OnnxRerankRunner(spec, source))
        return Embedder(OnnxEmbeddingRunner(spec, source))
    if spec.kind == "rerank":
        from models.torch_reranker import TorchRerankRunner

        return Reranker(TorchRerankRunner(spec, source))
    from models.torch_backend import TorchEmbeddingRunner

    return Embedder(TorchEmbeddingRunner(spec, source))
