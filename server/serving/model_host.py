"""The models served here at run time: loads them in the background, owns their lifecycles, and
answers whether they are saturated. The serving itself is each model's own (server.serving.local_model), as
the upstream side's is `UpstreamModel`'s while `Gateway` owns those."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor

from embedserve.batching.batcher import Priority
from embedserve.batching.config import BatchingConfig
from embedserve.models.errors import ModelNotReady
from embedserve.models.loading import LoadedModel, load_model
from embedserve.models.registry import ModelRegistry
from embedserve.models.spec import ModelSpec
from embedserve.models.types import ModelInfo
from embedserve.quantize.served_export import resolve_backend
from embedserve.server.serving.cache import ResultCache, identity
from embedserve.server.serving.local_model import BatcherRole, LocalModel, Shared
from embedserve.server.telemetry.metrics import Metrics

log = logging.getLogger("embedserve.host")

TOKENIZE_THREADS = 2
"""Threads that tokenize large requests off the event loop, for all models: the tokenizers library releases
the GIL, and more would only take cores from the models' own threads."""


class ModelHost:
    def __init__(
        self,
        registry: ModelRegistry,
        batching: Mapping[str, BatchingConfig],
        metrics: Metrics,
        *,
        tokenize_inline_chars: int = 2048,
        cache: ResultCache | None = None,
    ) -> None:
        self.registry = registry
        self.batching = batching
        self.metrics = metrics
        self.status: dict[str, str] = {spec.id: "loading" for spec in registry.specs}
        self.errors: dict[str, str] = {}
        self.loading_since: dict[str, float] = {}
        """Models being loaded now, and when (Unix time) their load began."""
        self._served: dict[str, LocalModel] = {}
        self.cache = cache
        self._shared = Shared(
            metrics, cache, ThreadPoolExecutor(TOKENIZE_THREADS, thread_name_prefix="tokenize"), tokenize_inline_chars
        )
        self._loader: asyncio.Task[None] | None = None
        self.draining = False
        self.on_load_failure: Callable[[str], None] | None = None
        """Called (on the event loop) with a model's id when it fails to load; the CLI stops the server
        unless told to keep serving the others."""
        self.on_loaded: Callable[[], None] | None = None
        """Called (on the event loop) once every model has loaded or failed; the CLI freezes what is
        loaded for the garbage collector (server/collector.py)."""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts loading every model in the background, so /health answers while they load."""
        self._loader = asyncio.create_task(self._load_all(), name="model-loader")

    async def _load_all(self) -> None:
        started = time.monotonic()
        for spec in self.registry.specs:
            self.loading_since[spec.id] = time.time()
            try:
                limits = self.batching[spec.id]
                loaded = await asyncio.to_thread(_load, spec, limits)
                runner = loaded.model.runner
                config = limits.for_device(runner.info.device, runner.cpu.batch_tokens, runner.cpu.workers)
                known = None
                if self.cache is not None:
                    known = await asyncio.to_thread(identity, spec.source, runner.info, spec.kind)
                served = LocalModel(spec, loaded.model, config, self._shared, known)
                await served.start()
            except Exception as exc:
                log.error("model failed to load", extra={"model": spec.id, "error": f"{type(exc).__name__}: {exc}"})
                log.debug("model load traceback", exc_info=True, extra={"model": spec.id})
                self.status[spec.id] = "failed"
                self.errors[spec.id] = str(exc)
                self.loading_since.pop(spec.id, None)
                if self.on_load_failure is not None:
                    self.on_load_failure(spec.id)
                continue
            self._served[spec.id] = served
            self.status[spec.id] = "ready"
            self.loading_since.pop(spec.id, None)
            self.metrics.model_memory.labels(spec.id).set(loaded.memory_bytes)
            self.metrics.model_load.labels(spec.id).set(loaded.load_seconds)
            self.metrics.model_ready.labels(spec.id).set(1)
        ready = [model_id for model_id, state in self.status.items() if state == "ready"]
        log.info(
            "models loaded" if len(ready) == len(self.status) else "models loaded, some failed",
            extra={"ready": ready, "failed": sorted(self.errors), "seconds": round(time.monotonic() - started, 3)},
        )
        if self.on_loaded is not None:
            self.on_loaded()

    async def wait_loaded(self) -> None:
        """Returns once every model has loaded or failed (a tool that serves no HTTP has no readiness to poll)."""
        if self._loader is not None:
            await asyncio.shield(self._loader)

    @property
    def ready(self) -> bool:
        return not self.draining and all(state == "ready" for state in self.status.values())

    async def close(self) -> None:
        """Drains: queued and running work finishes, new work is refused."""
        self.draining = True
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
            await asyncio.gather(self._loader, return_exceptions=True)
        await asyncio.gather(*(served.close() for served in self._served.values()))
        self._shared.tokenize_pool.shutdown(wait=False, cancel_futures=True)
        if self.cache is not None:
            await self.cache.close()

    def saturated(
        self, kinds: Collection[str], role: BatcherRole, within: float | None, priority: Priority = "interactive"
    ) -> float | None:
        """Whether every loaded model of `kinds` would refuse a request of `priority` now on its batcher of `role`
        (its class's queue at its bound, or the work queued ahead of it longer than `within` seconds): the
        Retry-After to give,
        else None. A model without that batcher is not saturated. Cheap: it is asked before a request's
        body is read."""
        retries = []
        for served in self._served.values():
            if served.spec.kind not in kinds:
                continue
            batcher = served.batcher_for(role)
            retry = batcher.full(within, priority) if batcher is not None else None
            if retry is None:
                return None
            retries.append(retry)
        return min(retries) if retries else None

    # -- requests --------------------------------------------------------------------------

    def info(self, model_id: str) -> ModelInfo | None:
        served = self._served.get(model_id)
        return served.info if served is not None else None

    def outputs(self, model_id: str) -> list[str]:
        """A loaded model's outputs besides its main one; none while it loads."""
        served = self._served.get(model_id)
        return served.outputs if served is not None else []

    def limits(self, model_id: str) -> BatchingConfig:
        """The batching limits a model runs under: its batcher's once loaded (adjusted for its device,
        `BatchingConfig.for_device`), the configured ones while it loads."""
        served = self._served.get(model_id)
        return served.batcher.config if served is not None else self.batching[model_id]

    def get(self, name: str | None, kind: str) -> LocalModel:
        """The loaded model a request names (UnknownModel if none; ModelNotReady while it loads or
        after it failed)."""
        spec = self.registry.resolve(name, kind)
        served = self._served.get(spec.id)
        if served is None:
            state = self.status[spec.id]
            why = (
                "still loading" if state == "loading" else f"unavailable: it failed to load: {self.errors.get(spec.id)}"
            )
            raise ModelNotReady(f"model {spec.id!r} is {why}")
        return served


def _load(spec: ModelSpec, limits: BatchingConfig) -> LoadedModel:
    """Loads one model (in a thread): its backend resolved first where it is `auto` (an ONNX export, made once)."""
    concrete = resolve_backend(spec)
    return load_model(concrete, max_batch_tokens=limits.max_batch_tokens, max_batch_size=limits.max_batch_size)
