"""The models served here at run time: loads them (at start in the background, or at a request), unloads
them (idle past their keep_alive, or to make room within the memory budget), owns their lifecycles, and
answers whether they are saturated. The serving itself is each model's own (server.serving.local_model), as
the upstream side's is `UpstreamModel`'s while `Gateway` owns those. What stays in memory is decided by
server.serving.residency's policy; this acts on it.

A request holds the model it runs on (`acquire`, then `release` when the request ends): a held model is never
unloaded, and its idle time starts at its last release.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor

from embedserve.batching.batcher import Priority
from embedserve.batching.config import BatchingConfig
from embedserve.models.errors import ModelNotReady
from embedserve.models.loading import LoadedModel, load_model
from embedserve.models.memory import rss_bytes
from embedserve.models.probe import probe
from embedserve.models.registry import ModelRegistry
from embedserve.models.spec import ModelSpec
from embedserve.models.types import ModelInfo
from embedserve.quantize.served_export import resolve_backend
from embedserve.server.malloc import trim
from embedserve.server.serving.cache import ResultCache, identity
from embedserve.server.serving.footprint import weight_bytes
from embedserve.server.serving.local_model import BatcherRole, LocalModel, Shared
from embedserve.server.serving.residency import ALWAYS, OverBudget, Residency, evictions, mib, too_large
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
        residency: Mapping[str, Residency] | None = None,
        memory_budget: int | None = None,
    ) -> None:
        self.registry = registry
        self.batching = batching
        self.metrics = metrics
        self.residency = {spec.id: (residency or {}).get(spec.id, ALWAYS) for spec in registry.specs}
        self.memory_budget = memory_budget
        """Bytes every model's weights may take together (None: no budget): server.serving.residency."""
        self.status: dict[str, str] = {
            spec.id: "loading" if self.residency[spec.id].preload else "unloaded" for spec in registry.specs
        }
        """Each model's state: loading, loaded, unloaded, or failed (what /v1/models and /health/ready show)."""
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
        """Called (on the event loop) with a model's id when it fails to load at start; the CLI stops the server
        unless told to keep serving the others."""
        self.on_loaded: Callable[[], None] | None = None
        """Called (on the event loop) once every model loaded at start has loaded or failed; the CLI freezes
        what is loaded for the garbage collector (server/collector.py)."""

        self._users: dict[str, int] = {}
        """Requests holding each model now: a held model is never unloaded."""
        self._last_used: dict[str, float] = {}
        """When (monotonic) each model was last acquired or released: the least recently used goes first."""
        self._warmed: set[str] = set()
        """Models loaded at least once: readiness waits for each model loaded at start, not for it to stay."""
        self._failed_at_start: set[str] = set()
        """Models loaded at start that failed: they stay failed, as the operator was told (on_load_failure)."""
        self._loads: dict[str, asyncio.Task[LocalModel]] = {}
        """Loads made for requests, in flight: every request for the model waits on the same one."""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._unloading: set[asyncio.Future[None]] = set()
        self._weights: dict[str, int] = {}
        """Each model's estimated bytes (server.serving.footprint), once asked."""
        self._charged: dict[str, int] = {}
        """Bytes counted against the budget for each model loading or loaded."""
        self._closing_bytes = 0
        """Bytes of models being unloaded, counted until their memory is returned."""
        self._planning = asyncio.Lock()
        """One load at a time decides what to unload for it, so two never take the same room."""
        self._freed = asyncio.Event()
        """Set whenever room may have come free: a model released, unloaded, or its load given up."""
        self._waiting_for_room: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts loading the models that preload in the background, so /health answers while they load."""
        self._loader = asyncio.create_task(self._load_all(), name="model-loader")

    async def _load_all(self) -> None:
        started = time.monotonic()
        for spec in self.registry.specs:
            if not self.residency[spec.id].preload:
                continue
            try:
                await self._load(spec)
            except Exception:
                self._failed_at_start.add(spec.id)
                if self.on_load_failure is not None:
                    self.on_load_failure(spec.id)
                continue
            self._idle_from_now(spec.id)
        log.info(
            "models loaded, some failed" if self._failed_at_start else "models loaded",
            extra={
                "ready": sorted(self._served),
                "failed": sorted(self._failed_at_start),
                "on_demand": sorted(model_id for model_id, r in self.residency.items() if not r.preload),
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        if self.on_loaded is not None:
            self.on_loaded()

    async def wait_loaded(self) -> None:
        """Returns once every model has loaded or failed (a tool that serves no HTTP has no readiness to poll)."""
        if self._loader is not None:
            await asyncio.shield(self._loader)

    async def _load(self, spec: ModelSpec) -> LocalModel:
        """Loads one model within the budget (unloading idle ones first where it must) and serves it."""
        model_id = spec.id
        self.status[model_id] = "loading"
        self.loading_since[model_id] = time.time()
        try:
            await self._make_room(spec)
            try:
                served = await self._bring_up(spec)
            except BaseException:
                self._charged.pop(model_id, None)
                self._freed.set()
                raise
        except Exception as exc:
            log.error("model failed to load", extra={"model": model_id, "error": f"{type(exc).__name__}: {exc}"})
            log.debug("model load traceback", exc_info=True, extra={"model": model_id})
            self.status[model_id] = "failed"
            self.errors[model_id] = str(exc)
            self.metrics.model_loads.labels(model_id, "failed").inc()
            raise
        except BaseException:  # cancelled: the server is stopping
            self.status[model_id] = "unloaded"
            raise
        finally:
            self.loading_since.pop(model_id, None)
        self._served[model_id] = served
        self._warmed.add(model_id)
        self.status[model_id] = "loaded"
        self.errors.pop(model_id, None)
        return served

    async def _bring_up(self, spec: ModelSpec) -> LocalModel:
        limits = self.batching[spec.id]
        loaded = await asyncio.to_thread(_load, spec, limits)
        runner = loaded.model.runner
        config = limits.for_device(runner.info.device, runner.cpu.batch_tokens, runner.cpu.workers)
        known = None
        if self.cache is not None:
            known = await asyncio.to_thread(identity, spec.source, runner.info, spec.kind)
        measured = await asyncio.to_thread(
            probe, loaded.model, max_batch_tokens=config.max_batch_tokens, max_batch_size=config.max_batch_size
        )
        log.info(
            "model probed",
            extra={
                "model": spec.id,
                "tokens": measured.tokens,
                "seconds": round(measured.seconds, 4),
                "tokens_per_second": round(measured.tokens_per_second),
            },
        )
        served = LocalModel(spec, loaded.model, config, self._shared, known)
        await served.start(measured)
        if self.memory_budget is not None and not self._charged.get(spec.id):  # no file said: the measurement
            self._charged[spec.id] = loaded.memory_bytes
        self.metrics.model_memory.labels(spec.id).set(loaded.memory_bytes)
        self.metrics.model_load.labels(spec.id).set(loaded.load_seconds)
        self.metrics.model_load_duration.labels(spec.id).observe(loaded.load_seconds)
        self.metrics.model_loads.labels(spec.id, "loaded").inc()
        self.metrics.model_ready.labels(spec.id).set(1)
        return served

    @property
    def ready(self) -> bool:
        """Not draining, and every model that preloads has loaded (it may have been unloaded since: a request
        loads it again). Models loaded on demand are not waited for."""
        preloads = [model_id for model_id, r in self.residency.items() if r.preload]
        return not self.draining and all(model_id in self._warmed for model_id in preloads)

    async def close(self) -> None:
        """Drains: queued and running work finishes, new work is refused."""
        self.draining = True
        for timer in self._timers.values():
            timer.cancel()
        loading = [task for task in (self._loader, *self._loads.values()) if task is not None and not task.done()]
        for task in loading:
            task.cancel()
        await asyncio.gather(*loading, *self._unloading, return_exceptions=True)
        await asyncio.gather(*(served.close() for served in self._served.values()))
        self._shared.tokenize_pool.shutdown(wait=False, cancel_futures=True)
        if self.cache is not None:
            await self.cache.close()

    def saturated(
        self, kinds: Collection[str], role: BatcherRole, within: float | None, priority: Priority = "interactive"
    ) -> float | None:
        """Whether every loaded model of `kinds` would refuse a request of `priority` now on its batcher of `role`
        (its class's queue at its bound, or the work queued ahead of it longer than `within` seconds): the
        Retry-After to give, else None. A model without that batcher is not saturated, nor one a request would
        load. Cheap: it is asked before a request's body is read."""
        if any(spec.kind in kinds and self._loads_on_demand(spec.id) for spec in self.registry.specs):
            return None
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
        """A loaded model's outputs besides its main one; none while it is not loaded."""
        served = self._served.get(model_id)
        return served.outputs if served is not None else []

    def limits(self, model_id: str) -> BatchingConfig:
        """The batching limits a model runs under: its batcher's once loaded (adjusted for its device,
        `BatchingConfig.for_device`), the configured ones while it is not."""
        served = self._served.get(model_id)
        return served.batcher.config if served is not None else self.batching[model_id]

    def get(self, name: str | None, kind: str) -> LocalModel:
        """The loaded model a request names, not held (UnknownModel if none; ModelNotReady while it is not
        loaded). Requests use `acquire`, which loads it."""
        spec = self.registry.resolve(name, kind)
        served = self._served.get(spec.id)
        if served is None:
            raise ModelNotReady(self._not_ready(spec.id))
        return served

    async def acquire(self, name: str | None, kind: str, *, within: float | None = None) -> LocalModel:
        """The model a request names, held until `release`: loaded first where it is not, every concurrent
        request waiting on the one load. UnknownModel if none; ModelNotReady while it loads at start, after
        it failed, or when it is not loaded within `within` seconds; OverBudget when it cannot fit."""
        spec = self.registry.resolve(name, kind)
        model_id = spec.id
        self._hold(model_id)  # first: a model loaded for this request is not unloaded before it runs on it
        try:
            served = self._served.get(model_id)
            return served if served is not None else await self._loaded(spec, within)
        except BaseException:
            self.release(model_id)
            raise

    def release(self, model_id: str) -> None:
        """A request is done with the model; its idle time starts when none holds it."""
        self._users[model_id] -= 1
        self._last_used[model_id] = time.monotonic()
        if not self._users[model_id]:
            self._idle_from_now(model_id)
            self._freed.set()

    def _hold(self, model_id: str) -> None:
        self._users[model_id] = self._users.get(model_id, 0) + 1
        self._last_used[model_id] = time.monotonic()
        if (timer := self._timers.pop(model_id, None)) is not None:
            timer.cancel()

    async def _loaded(self, spec: ModelSpec, within: float | None) -> LocalModel:
        model_id = spec.id
        load = self._loads.get(model_id)
        if load is None:
            if not self._loads_on_demand(model_id):
                raise ModelNotReady(self._not_ready(model_id))
            load = asyncio.create_task(self._load(spec), name=f"load-{model_id}")
            self._loads[model_id] = load
            load.add_done_callback(lambda task: self._load_done(model_id, task))
        try:
            async with asyncio.timeout(within):
                return await asyncio.shield(load)
        except TimeoutError:
            if model_id in self._waiting_for_room:
                held = ", ".join(sorted(self._served)) or "none"
                raise OverBudget(
                    f"model {model_id!r} is waiting for room in the model memory budget ({mib(self.memory_budget or 0)}), "
                    f"held by models in use ({held}); retry",
                    retry=True,
                ) from None
            raise ModelNotReady(f"model {model_id!r} is loading and was not ready within {within:g} s") from None
        except (OverBudget, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise ModelNotReady(f"model {model_id!r} failed to load: {exc} (a later request tries again)") from None

    def _load_done(self, model_id: str, task: asyncio.Task[LocalModel]) -> None:
        if self._loads.get(model_id) is task:
            del self._loads[model_id]
        if not task.cancelled() and task.exception() is None and not self._users.get(model_id):
            self._idle_from_now(model_id)  # everyone who asked for it left while it loaded

    def _loads_on_demand(self, model_id: str) -> bool:
        """Whether a request for this model (not loaded) loads it: not while it loads at start, nor after that
        load failed, nor while draining. A load made for a request that failed is tried again."""
        if self.draining or model_id in self._failed_at_start:
            return False
        return self.status[model_id] in ("unloaded", "failed") or model_id in self._loads

    def _not_ready(self, model_id: str) -> str:
        state = self.status[model_id]
        if self.draining:
            return f"model {model_id!r} is not loaded and the server is shutting down"
        if state == "loading":
            return f"model {model_id!r} is still loading"
        if state == "failed":
            return f"model {model_id!r} is unavailable: it failed to load: {self.errors.get(model_id)}"
        return f"model {model_id!r} is not loaded"

    # -- memory ----------------------------------------------------------------------------

    async def _make_room(self, spec: ModelSpec) -> None:
        """Counts `spec`'s weights against the budget, first unloading the least recently used idle models
        where they do not fit; waits while models in use hold the room. OverBudget for a model larger than
        the whole budget."""
        budget = self.memory_budget
        if budget is None:
            return
        model_id = spec.id
        if model_id not in self._weights:
            self._weights[model_id] = await asyncio.to_thread(weight_bytes, spec)
        need = self._weights[model_id]
        if (error := too_large(model_id, need, budget)) is not None:
            raise error
        self._waiting_for_room.add(model_id)
        try:
            async with self._planning:
                while True:
                    self._freed.clear()
                    held = sum(self._charged.values()) + self._closing_bytes
                    chosen = evictions(need, budget, held, self._idle_models())
                    if chosen == []:
                        self._charged[model_id] = need
                        return
                    if chosen is not None:
                        await asyncio.gather(*(self._unload(victim, "evicted") for victim in chosen))
                    else:
                        await self._freed.wait()
        finally:
            self._waiting_for_room.discard(model_id)

    def _idle_models(self) -> list[tuple[str, int]]:
        """Loaded models no request holds and with no work queued or running, least recently used first,
        with the bytes each is counted for."""
        idle = [model_id for model_id, served in self._served.items() if not self._users.get(model_id) and served.idle]
        idle.sort(key=lambda model_id: self._last_used.get(model_id, 0.0))
        return [(model_id, self._charged.get(model_id, 0)) for model_id in idle]

    def _idle_from_now(self, model_id: str) -> None:
        """Starts a loaded model's keep_alive, where it has one."""
        keep_alive = self.residency[model_id].keep_alive
        if keep_alive is None or model_id not in self._served or self._users.get(model_id) or self.draining:
            return
        if (timer := self._timers.pop(model_id, None)) is not None:
            timer.cancel()
        self._timers[model_id] = asyncio.get_running_loop().call_later(keep_alive, self._expire, model_id)

    def _expire(self, model_id: str) -> None:
        """Its keep_alive passed with no request on it: unloaded, unless work is still running (then later)."""
        self._timers.pop(model_id, None)
        served = self._served.get(model_id)
        if served is None or self._users.get(model_id) or self.draining:
            return
        if not served.idle:  # a batch of a request that left is still running
            self._idle_from_now(model_id)
            return
        task = self._unload(model_id, "idle")
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)

    def _unload(self, model_id: str, reason: str) -> asyncio.Future[None]:
        """Takes a model out of service at once (no request gets it from now on; the next one loads it again),
        then drains and frees it: its memory is counted against the budget until it is returned."""
        served = self._served.pop(model_id)
        if (timer := self._timers.pop(model_id, None)) is not None:
            timer.cancel()
        nbytes = self._charged.pop(model_id, 0)
        self._closing_bytes += nbytes
        self.status[model_id] = "unloaded"
        self.metrics.model_ready.labels(model_id).set(0)
        self.metrics.model_memory.labels(model_id).set(0)
        self.metrics.model_unloads.labels(model_id, reason).inc()
        return asyncio.ensure_future(self._free(served, model_id, reason, nbytes))

    async def _free(self, served: LocalModel, model_id: str, reason: str, nbytes: int) -> None:
        try:
            await served.close()
            del served  # the last reference: its runner's memory goes with it
            await asyncio.to_thread(_return_memory)
        finally:
            self._closing_bytes -= nbytes
            self._freed.set()
        log.info("model unloaded", extra={"model": model_id, "reason": reason, "rss_mb": round(rss_bytes() / 2**20, 1)})


def _load(spec: ModelSpec, limits: BatchingConfig) -> LoadedModel:
    """Loads one model (in a thread): its backend resolved first where it is `auto` (an ONNX export, made once)."""
    concrete = resolve_backend(spec)
    return load_model(concrete, max_batch_tokens=limits.max_batch_tokens, max_batch_size=limits.max_batch_size)


def _return_memory() -> None:
    """After an unload (in a thread): collects what cycles still hold of the model, then gives the heap's free
    pages back to the system, so the process's resident memory falls by what the model took. What was frozen
    for the collector at start (server/collector.py) is thawed for this one collection, as a model loaded then
    is among it, and what is still loaded is frozen again."""
    frozen = gc.get_freeze_count() > 0
    if frozen:
        gc.unfreeze()
    gc.collect()
    if frozen:
        gc.freeze()
    trim()
