"""The models served here at run time: loads them in the background, owns their batchers, runs requests.

The one place where the server meets batching and models: tokenize (off the event loop when
large) -> batcher -> per-request finishing. Each loaded model is a `LocalModel`, the local side of
server.serving's seam (the upstream side is server.upstream.client.UpstreamModel).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from batching.batcher import Batcher
from batching.config import BatchingConfig
from batching.errors import QueueFull, RequestTooLarge
from models.classifier import Classifier
from models.embedder import Embedder
from models.errors import InvalidInput, ModelNotReady
from models.loading import LoadedModel, load_model
from models.output_types import calibration_ranges
from models.registry import ModelRegistry
from models.reranker import Reranker
from models.spec import ModelSpec
from models.texts import SENTENCES
from models.types import (
    Embeddings,
    ModelInfo,
    Predictions,
    Scores,
    SparseEmbeddings,
    SparseVector,
    TokenEmbeddings,
    Tokens,
    TokenSpan,
)
from server import tracing
from server.cache import ResultCache, identity, item_key
from server.metrics import Metrics
from server.serving import Admission, Call, ClassifyOptions, EmbedOptions, Inputs, RerankOptions, TextOrPair

log = logging.getLogger("embedserve.host")
T = TypeVar("T")

BatcherRole = Literal["main", "sparse", "tokens"]
"""A model's batchers: its main output (embeddings, scores, logits), sparse weights, token embeddings."""


@dataclass(slots=True)
class LocalModel:
    """A model loaded here: its runner behind its batcher(s)."""

    spec: ModelSpec
    loaded: LoadedModel
    batcher: Batcher[Tokens, np.ndarray]
    host: ModelHost
    sparse_batcher: Batcher[Tokens, SparseVector] | None = None
    """Sparse lexical weights run through their own batcher: the same model, another output."""
    token_batcher: Batcher[Tokens, np.ndarray] | None = None
    """Token embeddings (TEI's /embed_all), likewise; made by the first request that asks."""
    identity: bytes | None = None
    """What its outputs depend on besides its inputs (server.cache); None: not cached (cache off, or no local
    folder)."""

    @property
    def prompts(self) -> dict[str, str]:
        return self.info.prompts

    @property
    def dimension(self) -> int:
        return self.info.dimension

    async def embed(self, inputs: Inputs, options: EmbedOptions, call: Call) -> Embeddings:
        return await self.host.embed(self, inputs, options, call)

    async def embed_sparse(self, texts: Sequence[str], options: EmbedOptions, call: Call) -> SparseEmbeddings:
        return await self.host.embed_sparse(self, texts, options, call)

    async def rerank(self, query: str, documents: Sequence[str], options: RerankOptions, call: Call) -> Scores:
        return await self.host.rerank(self, query, documents, options, call)

    async def calibration(self, dimensions: int | None) -> np.ndarray:
        return await self.host.calibration(self, dimensions=dimensions)

    async def embed_tokens(self, texts: Sequence[str], options: EmbedOptions, call: Call) -> TokenEmbeddings:
        return await self.host.embed_tokens(self, texts, options, call)

    async def classify(self, inputs: Sequence[TextOrPair], options: ClassifyOptions, call: Call) -> Predictions:
        return await self.host.classify(self, inputs, options, call)

    async def describe(
        self, texts: Sequence[str], *, add_special_tokens: bool, prompt_name: str | None
    ) -> list[list[TokenSpan]]:
        model = self.loaded.model
        prefix = model.prompt(prompt_name) if isinstance(model, Embedder) else ""
        texts = [prefix + text for text in texts] if prefix else texts

        def describe() -> list[list[TokenSpan]]:
            return model.runner.describe(texts, add_special_tokens=add_special_tokens)

        return await self.host.off_loop(describe, sum(len(t) for t in texts))

    async def decode(self, sequences: Sequence[Sequence[int]], *, skip_special_tokens: bool) -> list[str]:
        def decode() -> list[str]:
            return self.loaded.model.runner.decode(sequences, skip_special_tokens=skip_special_tokens)

        return await self.host.off_loop(decode, sum(len(ids) for ids in sequences) * 4)

    def batcher_for(self, role: BatcherRole) -> Batcher | None:
        """The batcher of `role`; None where the model has none (no sparse head, no token embeddings
        asked for yet)."""
        if role == "sparse":
            return self.sparse_batcher
        if role == "tokens":
            return self.token_batcher
        return self.batcher

    @property
    def batchers(self) -> list[Batcher]:
        return [b for b in (self.batcher, self.sparse_batcher, self.token_batcher) if b is not None]

    @property
    def info(self) -> ModelInfo:
        return self.loaded.model.info

    @property
    def embedder(self) -> Embedder:
        model = self.loaded.model
        assert isinstance(model, Embedder), f"{self.spec.id} is a {self.spec.kind} model"
        return model

    @property
    def classifier(self) -> Classifier:
        model = self.loaded.model
        assert isinstance(model, Classifier), f"{self.spec.id} is a {self.spec.kind} model"
        return model

    @property
    def reranker(self) -> Reranker:
        model = self.loaded.model
        assert isinstance(model, Reranker), f"{self.spec.id} is a {self.spec.kind} model"
        return model


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
        self.tokenize_inline_chars = tokenize_inline_chars
        self.status: dict[str, str] = {spec.id: "loading" for spec in registry.specs}
        self.errors: dict[str, str] = {}
        self.loading_since: dict[str, float] = {}
        """Models being loaded now, and when (Unix time) their load began."""
        self._calibrations: dict[tuple[str, int | None], asyncio.Future[np.ndarray]] = {}
        self._served: dict[str, LocalModel] = {}
        self.cache = cache
        self._computing: dict[bytes, asyncio.Future[np.ndarray]] = {}
        """Items being computed for some request now, by cache key: an identical item waits for it."""
        self._tokenize_pool = ThreadPoolExecutor(2, thread_name_prefix="tokenize")
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
                loaded = await asyncio.to_thread(
                    load_model, spec, max_batch_tokens=limits.max_batch_tokens, max_batch_size=limits.max_batch_size
                )
                runner = loaded.model.runner
                config = limits.for_device(runner.info.device, runner.cpu_batch_tokens, runner.cpu_workers)
                served = LocalModel(spec, loaded, self._batcher(spec.id, runner.run, config, runner.pads), self)
                if self.cache is not None:
                    served.identity = await asyncio.to_thread(identity, spec.source, runner.info, spec.kind)
                if runner.info.sparse:
                    served.sparse_batcher = self._batcher(
                        f"{spec.id}/sparse",
                        runner.run_sparse,
                        config,
                        runner.pads,  # type: ignore[attr-defined]
                    )
                for batcher in served.batchers:
                    await batcher.start()
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

    def _batcher(
        self, name: str, run: Callable[[list[Tokens]], Sequence[Any]], config: BatchingConfig, padded: bool
    ) -> Batcher[Tokens, Any]:
        return Batcher(run, config, name=name, observer=self.metrics.batch_observer(name), padded=padded)

    @property
    def ready(self) -> bool:
        return not self.draining and all(state == "ready" for state in self.status.values())

    async def close(self) -> None:
        """Drains: queued and running work finishes, new work is refused."""
        self.draining = True
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
            await asyncio.gather(self._loader, return_exceptions=True)
        await asyncio.gather(
            *(batcher.close(drain=True) for served in self._served.values() for batcher in served.batchers)
        )
        for served in self._served.values():
            served.loaded.model.runner.close()
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)
        if self.cache is not None:
            await self.cache.close()

    def saturated(self, kinds: Collection[str], role: BatcherRole, within: float | None) -> float | None:
        """Whether every loaded model of `kinds` would refuse a request now on its batcher of `role` (its
        queue at its bound, or its queued work longer than `within` seconds): the Retry-After to give,
        else None. A model without that batcher is not saturated. Cheap: it is asked before a request's
        body is read."""
        retries = []
        for served in self._served.values():
            if served.spec.kind not in kinds:
                continue
            batcher = served.batcher_for(role)
            retry = batcher.full(within) if batcher is not None else None
            if retry is None:
                return None
            retries.append(retry)
        return min(retries) if retries else None

    async def calibration(self, served: LocalModel, *, dimensions: int | None = None) -> np.ndarray:
        """Per-dimension [min, max] of the model's embeddings of the built-in calibration sentences, as
        its requests get them (the model's own normalization, cut to `dimensions`): what int8 and uint8
        outputs are scaled by. Computed once per model and size, by the first request that needs it."""
        key = (served.spec.id, dimensions)
        if key not in self._calibrations:
            self._calibrations[key] = asyncio.ensure_future(self._calibrate(served, dimensions))
        try:
            return await asyncio.shield(self._calibrations[key])
        except Exception:
            self._calibrations.pop(key, None)  # the next request tries again
            raise

    async def _calibrate(self, served: LocalModel, dimensions: int | None) -> np.ndarray:
        result = await self.embed(served, list(SENTENCES), EmbedOptions(dimensions=dimensions), Call(within=None))
        return calibration_ranges(result.vectors)

    # -- requests --------------------------------------------------------------------------

    def info(self, model_id: str) -> ModelInfo | None:
        served = self._served.get(model_id)
        return served.info if served is not None else None

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

    async def embed(self, served: LocalModel, inputs: Inputs, options: EmbedOptions, call: Call) -> Embeddings:
        embedder = served.embedder
        embedder.check_dimensions(options.dimensions)

        tokens = await self._embedder_items(embedder, inputs, options, call)
        rows = await self._run(served, tokens, within=call.within)
        vectors = embedder.finish(np.stack(rows), normalize=options.normalize, dimensions=options.dimensions)
        return Embeddings(vectors, sum(len(t) for t in tokens))

    async def _embedder_items(
        self, embedder: Embedder, inputs: Inputs, options: EmbedOptions, call: Call
    ) -> list[Tokens]:
        """An embedding request's items: tokenized with its prompt and truncation, then admitted."""

        def tokenize() -> list[Tokens]:
            return embedder.tokenize(inputs, prompt_name=options.prompt_name, truncate=options.truncate)

        return await self._tokenize(tokenize, sum(len(x) for x in inputs), call.admit)

    async def embed_sparse(
        self, served: LocalModel, texts: Sequence[str], options: EmbedOptions, call: Call
    ) -> SparseEmbeddings:
        """Lexical weights per text, for models with a sparse head (bge-m3)."""
        if served.sparse_batcher is None:
            raise InvalidInput(
                f"model {served.spec.id!r} has no sparse head (bge-m3's sparse_linear.pt) for sparse embeddings",
                param="model",
            )
        embedder = served.embedder

        tokens = await self._embedder_items(embedder, texts, options, call)
        vectors = await self._submit(served, tokens, served.sparse_batcher, within=call.within)
        return SparseEmbeddings(vectors, sum(len(t) for t in tokens))

    async def rerank(
        self, served: LocalModel, query: str, documents: Sequence[str], options: RerankOptions, call: Call
    ) -> Scores:
        """Scores each (query, document) pair; each pair is one batcher item."""
        reranker = served.reranker
        if not documents:
            return Scores(np.zeros(0, dtype=np.float32), 0)

        def tokenize() -> list[Tokens]:
            return reranker.tokenize(query, documents, prompt_name=options.prompt_name, truncate=options.truncate)

        tokens = await self._tokenize(tokenize, len(query) + sum(len(d) for d in documents), call.admit)
        raw = await self._run(served, tokens, within=call.within)
        return Scores(reranker.scores(np.stack(raw), raw_scores=options.raw_scores), sum(len(t) for t in tokens))

    async def embed_tokens(
        self, served: LocalModel, texts: Sequence[str], options: EmbedOptions, call: Call
    ) -> TokenEmbeddings:
        """Each token's vector, for models whose runner gives them (TEI's /embed_all)."""
        embedder = served.embedder
        if not embedder.info.token_embeddings:
            raise InvalidInput(f"model {served.spec.id!r} gives no token embeddings", param="model")
        if served.token_batcher is None:  # the model's own limits, as its embeddings batcher has them
            main = served.batcher
            batcher = self._batcher(f"{served.spec.id}/tokens", embedder.runner.run_tokens, main.config, main.padded)  # type: ignore[attr-defined]
            served.token_batcher = batcher
            await batcher.start()

        tokens = await self._embedder_items(embedder, texts, options, call)
        vectors = await self._submit(served, tokens, served.token_batcher, within=call.within)
        return TokenEmbeddings(vectors, sum(len(t) for t in tokens))

    async def classify(
        self, served: LocalModel, inputs: Sequence[TextOrPair], options: ClassifyOptions, call: Call
    ) -> Predictions:
        """Label scores per input (a text or a pair of texts)."""
        classifier = served.classifier

        def tokenize() -> list[Tokens]:
            return classifier.tokenize(inputs, prompt_name=options.prompt_name, truncate=options.truncate)

        chars = sum(len(x) if isinstance(x, str) else len(x[0]) + len(x[1]) for x in inputs)
        tokens = await self._tokenize(tokenize, chars, call.admit)
        raw = await self._run(served, tokens, within=call.within)
        return Predictions(classifier.scores(np.stack(raw), options.function), sum(len(t) for t in tokens))

    async def off_loop(self, work: Callable[[], T], chars: int) -> T:
        """Tokenizer work: on the event loop when small (cheaper than a thread hop), in a thread when large."""
        if chars <= self.tokenize_inline_chars:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, work)

    async def _run(self, served: LocalModel, tokens: list[Tokens], *, within: float | None) -> list[np.ndarray]:
        """The model's output for each item: from the response cache where it has it, from another
        request computing the same item now (single-flight), else from the batcher; only the misses queue."""
        cache = self.cache
        if cache is None or served.identity is None:
            return await self._submit(served, tokens, within=within)
        keys = [item_key(served.identity, t) for t in tokens]
        rows = await cache.lookup(keys, _row_shape(served))
        own: dict[bytes, int] = {}  # what this request computes: first index of each distinct key
        waits: dict[int, asyncio.Future[np.ndarray]] = {}
        loop = asyncio.get_running_loop()
        for i, (key, row) in enumerate(zip(keys, rows)):
            if row is not None or key in own:
                continue
            if (computing := self._computing.get(key)) is not None:
                waits[i] = computing
                continue
            own[key] = i
            future = self._computing[key] = loop.create_future()
            future.add_done_callback(_retrieve)
        hits = len(keys) - len(own)
        self.metrics.cache_requests.labels(served.spec.id, "hit").inc(hits)
        self.metrics.cache_requests.labels(served.spec.id, "miss").inc(len(own))
        if own:
            try:
                computed = await self._submit(served, [tokens[i] for i in own.values()], within=within)
            except BaseException as exc:
                for key in own:
                    self._computing.pop(key).set_exception(_Abandoned(exc))
                raise
            fresh = {}
            for (key, i), row in zip(own.items(), computed):
                row = np.array(row, dtype=np.float32)  # a copy: a row of the batch would keep the batch alive
                rows[i] = fresh[key] = row
                self._computing.pop(key).set_result(row)
            cache.store(fresh)
            self._observe_cache()
        for i, future in waits.items():
            try:
                rows[i] = await asyncio.shield(future)
            except _Abandoned:  # its request failed or left: compute it here
                rows[i] = (await self._submit(served, [tokens[i]], within=within))[0]
        for i, key in enumerate(keys):
            if rows[i] is None:  # a repeat within this request
                rows[i] = rows[own[key]]
        return rows  # type: ignore[return-value]

    def _observe_cache(self) -> None:
        local = self.cache.local  # type: ignore[union-attr]
        self.metrics.cache_bytes.set(local.bytes)
        self.metrics.cache_entries.set(len(local))
        if local.evictions:
            self.metrics.cache_evictions.inc(local.evictions)
            local.evictions = 0
        shared = self.cache.shared  # type: ignore[union-attr]
        if shared is not None:
            self.metrics.cache_shared_degraded.set(1 if shared.degraded else 0)

    async def _submit(
        self, served: LocalModel, tokens: list[Tokens], batcher: Batcher | None = None, *, within: float | None = None
    ) -> list[Any]:
        """Queues the request's items; refused (429) when the queue is at its bound or the work already
        queued would outlast `within`, the request's deadline in seconds. Traced: its queue wait and batches."""
        timeline = tracing.timeline()
        try:
            rows = await (batcher or served.batcher).submit(
                tokens, [len(t) for t in tokens], within=within, timeline=timeline
            )
            tracing.record(timeline, served.spec.id)
            return rows
        except (QueueFull, RequestTooLarge) as exc:
            reason = "overload" if isinstance(exc, QueueFull) else "too_large"
            self.metrics.rejections.labels(served.spec.id, reason).inc()
            raise

    async def _tokenize(
        self, tokenize: Callable[[], list[Tokens]], chars: int, admit: Admission | None
    ) -> list[Tokens]:
        """Small requests are tokenized on the event loop (cheaper than a thread hop), large ones off it;
        then `admit` may refuse the request for its token count, before it is queued."""
        with tracing.span("tokenize", characters=chars):
            tokens = await self.off_loop(tokenize, chars)
        if admit is not None:
            await admit(sum(len(t) for t in tokens))
        return tokens


class _Abandoned(Exception):
    """The request computing an item failed or left before it finished: whoever waited computes it."""


def _retrieve(future: asyncio.Future[np.ndarray]) -> None:
    """Marks an abandoned item's error as seen: nobody may have been waiting for it."""
    if not future.cancelled():
        future.exception()


def _row_shape(served: LocalModel) -> tuple[int, ...]:
    """The shape of one item's output: an embedding's dimension, or a classifier's logits (a scalar for
    a one-label reranker)."""
    dimension = served.info.dimension
    return () if served.spec.kind != "embed" and dimension == 1 else (dimension,)
