"""The served models at run time: loads them in the background, owns their batchers, runs requests.

The one place where the server meets batching and models: tokenize (off the event loop when
large) -> batcher -> per-request finishing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from batching.batcher import Batcher
from batching.config import BatchingConfig
from batching.errors import QueueFull, RequestTooLarge
from models.loading import LoadedModel, load_model
from models.registry import ModelRegistry
from models.runner import ModelInfo, Tokens
from models.spec import ModelSpec
from server.errors import ApiError
from server.metrics import Metrics

log = logging.getLogger("embedserve.host")


@dataclass(slots=True)
class ServedModel:
    spec: ModelSpec
    loaded: LoadedModel
    batcher: Batcher[Tokens, np.ndarray]

    @property
    def info(self) -> ModelInfo:
        return self.loaded.embedder.info


@dataclass(slots=True)
class Embeddings:
    vectors: np.ndarray
    tokens: int


class ModelHost:
    def __init__(
        self,
        registry: ModelRegistry,
        batching: Mapping[str, BatchingConfig],
        metrics: Metrics,
        *,
        tokenize_inline_chars: int = 2048,
    ) -> None:
        self.registry = registry
        self.batching = batching
        self.metrics = metrics
        self.tokenize_inline_chars = tokenize_inline_chars
        self.status: dict[str, str] = {spec.id: "loading" for spec in registry.specs}
        self.errors: dict[str, str] = {}
        self._served: dict[str, ServedModel] = {}
        self._tokenize_pool = ThreadPoolExecutor(2, thread_name_prefix="tokenize")
        self._loader: asyncio.Task[None] | None = None
        self.draining = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts loading every model in the background, so /health answers while they load."""
        self._loader = asyncio.create_task(self._load_all(), name="model-loader")

    async def _load_all(self) -> None:
        for spec in self.registry.specs:
            try:
                loaded = await asyncio.to_thread(load_model, spec)
                batcher: Batcher[Tokens, np.ndarray] = Batcher(
                    loaded.embedder.runner.run,
                    self.batching[spec.id],
                    name=spec.id,
                    observer=self.metrics.batch_observer(spec.id),
                )
                await batcher.start()
            except Exception as exc:
                log.exception("model failed to load", extra={"model": spec.id})
                self.status[spec.id] = "failed"
                self.errors[spec.id] = str(exc)
                continue
            self._served[spec.id] = ServedModel(spec, loaded, batcher)
            self.status[spec.id] = "ready"
            self.metrics.model_memory.labels(spec.id).set(loaded.memory_bytes)
            self.metrics.model_load.labels(spec.id).set(loaded.load_seconds)
            self.metrics.model_ready.labels(spec.id).set(1)

    @property
    def ready(self) -> bool:
        return not self.draining and all(state == "ready" for state in self.status.values())

    async def close(self) -> None:
        """Drains: queued and running work finishes, new work is refused."""
        self.draining = True
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
            await asyncio.gather(self._loader, return_exceptions=True)
        await asyncio.gather(*(served.batcher.close(drain=True) for served in self._served.values()))
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)

    # -- requests --------------------------------------------------------------------------

    def info(self, model_id: str) -> ModelInfo | None:
        served = self._served.get(model_id)
        return served.info if served is not None else None

    def get(self, name: str | None, kind: str) -> ServedModel:
        """The loaded model a request names (404 if unknown, 503 while it loads or after it failed)."""
        spec = self.registry.resolve(name, kind)
        served = self._served.get(spec.id)
        if served is None:
            state = self.status[spec.id]
            why = (
                "still loading" if state == "loading" else f"unavailable: it failed to load: {self.errors.get(spec.id)}"
            )
            raise ApiError(
                503,
                f"model {spec.id!r} is {why}",
                code="model_not_ready",
                headers={"Retry-After": "5"},
            )
        return served

    async def embed(
        self,
        served: ServedModel,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        *,
        truncate: bool = True,
        normalize: bool | None = None,
        dimensions: int | None = None,
        prompt_name: str | None = None,
    ) -> Embeddings:
        embedder = served.loaded.embedder
        tokens = await self._tokenize(served, inputs, prompt_name, truncate)
        costs = [len(t) for t in tokens]
        try:
            rows = await served.batcher.submit(tokens, costs)
        except (QueueFull, RequestTooLarge) as exc:
            reason = "overload" if isinstance(exc, QueueFull) else "too_large"
            self.metrics.rejections.labels(served.spec.id, reason).inc()
            raise
        vectors = embedder.finish(np.stack(rows), normalize=normalize, dimensions=dimensions)
        return Embeddings(vectors, sum(costs))

    async def _tokenize(
        self,
        served: ServedModel,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        prompt_name: str | None,
        truncate: bool,
    ) -> list[Tokens]:
        embedder = served.loaded.embedder

        def tokenize() -> list[Tokens]:
            return embedder.tokenize(inputs, prompt_name=prompt_name, truncate=truncate)

        if sum(len(x) for x in inputs) <= self.tokenize_inline_chars:
            return tokenize()
        return await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, tokenize)
