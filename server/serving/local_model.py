"""A model served here: its runner behind its batcher(s), and the serving of every request kind.

The local side of server.serving.seam's seam (the upstream side is server.serving.upstream.client.UpstreamModel).
A request goes: tokenize (on the event loop when small, in a thread when large) -> the call's token
admission -> the response cache and in-flight items -> the batcher -> per-request finishing. Loading,
lifecycles and saturation are server.serving.model_host's; a `LocalModel` never calls back into it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np

from embedserve.batching.batcher import Batcher
from embedserve.batching.config import BatchingConfig
from embedserve.batching.errors import QueueFull, RequestTooLarge
from embedserve.models import late_interaction
from embedserve.models.backend import CHUNKS, MULTIVECTOR, SPARSE, TOKENS
from embedserve.models.classifier import Classifier
from embedserve.models.embedder import Embedder
from embedserve.models.errors import InputTooLong, InvalidInput
from embedserve.models.output_types import calibration_ranges
from embedserve.models.probe import Probe
from embedserve.models.prompts import prompt_for_task
from embedserve.models.reranker import Reranker
from embedserve.models.spec import ModelSpec
from embedserve.models.texts import SENTENCES
from embedserve.models.types import (
    Embeddings,
    ModelInfo,
    MultiVectors,
    Predictions,
    Scores,
    SparseEmbeddings,
    TokenEmbeddings,
    Tokens,
    TokenSpan,
)
from embedserve.server.serving.cache import ResultCache, item_key
from embedserve.server.serving.seam import Call, ClassifyParams, EmbedParams, Inputs, RerankParams, TextOrPair
from embedserve.server.telemetry import tracing
from embedserve.server.telemetry.metrics import Metrics

T = TypeVar("T")
Model = Embedder | Reranker | Classifier

BatcherRole = Literal["main", "sparse", "tokens", "multivector", "chunks"]
"""A model's batchers: its main output's (embeddings, scores, logits), and one per other output
(models.backend: SPARSE, TOKENS, MULTIVECTOR, CHUNKS)."""


@dataclass(slots=True)
class Shared:
    """What every local model of one server shares."""

    metrics: Metrics
    cache: ResultCache | None
    tokenize_pool: ThreadPoolExecutor
    tokenize_inline_chars: int
    computing: dict[bytes, asyncio.Future[np.ndarray]] = field(default_factory=dict)
    """Items being computed for some request now, by cache key: an identical item waits for it."""

    def batcher(
        self, name: str, run: Callable[[list[Tokens]], Sequence[Any]], config: BatchingConfig, padded: bool
    ) -> Batcher[Tokens, Any]:
        return Batcher(run, config, name=name, observer=self.metrics.batch_observer(name), padded=padded)

    async def off_loop(self, work: Callable[[], T], chars: int) -> T:
        """Tokenizer work: on the event loop when small (cheaper than a thread hop), in a thread when large."""
        if chars <= self.tokenize_inline_chars:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self.tokenize_pool, work)


class LocalModel:
    """A loaded model and its batchers: does the serving of every request kind the model has."""

    def __init__(
        self, spec: ModelSpec, model: Model, config: BatchingConfig, shared: Shared, identity: bytes | None
    ) -> None:
        self.spec = spec
        self.model = model
        self.runner = model.runner
        self.identity = identity
        """What its outputs depend on besides its inputs (server.serving.cache); None: not cached (cache off, or no
        local folder)."""
        self._shared = shared
        self.batcher = shared.batcher(spec.id, self.runner.run, config, self.runner.cost == "padded")
        self.output_batchers: dict[str, Batcher[Tokens, Any]] = {}
        """The runner's other outputs (models.backend: SPARSE, TOKENS), each through its own batcher with the
        model's limits: made by the first request that asks for that output."""
        self._calibrations: dict[int | None, asyncio.Future[np.ndarray]] = {}
        if shared.cache is not None and identity is not None:  # its series exist where it is cached, as before
            self._cache_hits = shared.metrics.cache_requests.labels(spec.id, "hit")
            self._cache_misses = shared.metrics.cache_requests.labels(spec.id, "miss")

    async def start(self, measured: Probe | None = None) -> None:
        """Starts its batcher, `measured` (models.probe) as the throughput its first requests are judged by."""
        await self.batcher.start()
        if measured is not None:
            self.batcher.seed(measured.tokens, measured.seconds)

    async def close(self) -> None:
        """Drains its batchers (queued and running work finishes), then frees the runner."""
        await asyncio.gather(*(batcher.close(drain=True) for batcher in self.batchers))
        self.runner.close()

    @property
    def idle(self) -> bool:
        """No work queued or running on any of its batchers: it can be unloaded without waiting."""
        return all(batcher.idle for batcher in self.batchers)

    @property
    def batchers(self) -> list[Batcher]:
        return [self.batcher, *self.output_batchers.values()]

    def batcher_for(self, role: BatcherRole) -> Batcher | None:
        """The batcher of `role`; None where there is none (no sparse head, or no request asked for
        that output yet)."""
        return self.batcher if role == "main" else self.output_batchers.get(role)

    @property
    def outputs(self) -> list[str]:
        """The outputs the model gives besides its main one (models.backend: SPARSE, TOKENS)."""
        return list(self.runner.outputs)

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def prompts(self) -> dict[str, str]:
        return self.info.prompts

    @property
    def dimension(self) -> int:
        return self.info.width

    # -- requests --------------------------------------------------------------------------

    async def embed(self, inputs: Inputs, options: EmbedParams, call: Call) -> Embeddings:
        embedder = self._of(Embedder)
        embedder.check_dimensions(options.dimensions)
        tokens = await self._embedder_items(embedder, inputs, options, call)
        rows = await self._rows(tokens, call)
        vectors = embedder.finish(np.stack(rows), normalize=options.normalize, dimensions=options.dimensions)
        return Embeddings(vectors, sum(len(t) for t in tokens))

    async def embed_sparse(self, texts: Sequence[str], options: EmbedParams, call: Call) -> SparseEmbeddings:
        """Lexical weights per text, for models with a sparse head (bge-m3)."""
        if SPARSE not in self.runner.outputs:
            raise InvalidInput(
                f"model {self.spec.id!r} has no sparse head (bge-m3's sparse_linear.pt) for sparse embeddings",
                param="model",
            )
        tokens = await self._embedder_items(self._of(Embedder), texts, options, call)
        vectors = await self._submit(tokens, call, await self._output_batcher(SPARSE))
        return SparseEmbeddings(vectors, sum(len(t) for t in tokens))

    async def embed_tokens(self, texts: Sequence[str], options: EmbedParams, call: Call) -> TokenEmbeddings:
        """Each token's vector, for models whose runner gives them (TEI's /embed_all)."""
        return TokenEmbeddings(*await self._per_item(TOKENS, "token embeddings", texts, options, call))

    async def embed_multivector(self, texts: Sequence[str], options: EmbedParams, call: Call) -> MultiVectors:
        """Multi-vector (ColBERT) rows, for models with bge-m3's colbert_linear.pt. Their width is the head's:
        `dimensions` may only name it."""
        return MultiVectors(*await self._per_item(MULTIVECTOR, "multi-vector embeddings", texts, options, call))

    async def embed_late_chunks(self, chunks: Sequence[str], options: EmbedParams, call: Call) -> Embeddings:
        """Late chunking: one item through the CHUNKS batcher (budgeted by the whole document's tokens), then each
        chunk's vector finished as `embed` finishes rows (dimensions, the model's normalization)."""
        embedder = self._of(Embedder)
        if CHUNKS not in self.runner.outputs:
            raise InvalidInput(
                f"model {self.spec.id!r} cannot pool chunks of one text (late chunking): its pipeline has more than "
                "pooling and Dense layers",
                param="model",
            )
        embedder.check_dimensions(options.dimensions)

        def tokenize() -> list[Tokens]:
            return [embedder.tokenize_chunks(chunks, prompt_name=options.prompt_name)]

        tokens = await self._tokenize(tokenize, sum(len(c) for c in chunks), call)
        (rows,) = await self._submit(tokens, call, await self._output_batcher(CHUNKS))
        vectors = embedder.finish(rows, normalize=options.normalize, dimensions=options.dimensions)
        return Embeddings(vectors, len(tokens[0]))

    async def _per_item(
        self, output: str, what: str, texts: Sequence[str], options: EmbedParams, call: Call
    ) -> tuple[list[Any], int]:
        """One of the runner's other outputs for each text, through that output's own batcher; and the tokens."""
        embedder = self._of(Embedder)
        if output not in self.runner.outputs:
            raise InvalidInput(f"model {self.spec.id!r} gives no {what}", param="model")
        width = self.info.output_widths.get(output)
        if options.dimensions is not None and width is not None and options.dimensions != width:
            raise InvalidInput(
                f"model {self.spec.id!r} gives its {what} in {width} dimensions only", param="dimensions"
            )
        tokens = await self._embedder_items(embedder, texts, options, call)
        vectors = await self._submit(tokens, call, await self._output_batcher(output))
        if options.dimensions is not None and vectors and options.dimensions != vectors[0].shape[-1]:  # undeclared
            raise InvalidInput(
                f"model {self.spec.id!r} gives its {what} in {vectors[0].shape[-1]} dimensions only", param="dimensions"
            )
        return vectors, sum(len(t) for t in tokens)

    async def rerank(self, query: str, documents: Sequence[str], options: RerankParams, call: Call) -> Scores:
        """Scores each (query, document) pair; each pair is one batcher item. An embedding model with bge-m3's
        heads scores by late interaction instead (`_late_interaction`)."""
        if not documents:
            return Scores(np.zeros(0, dtype=np.float32), 0)
        if isinstance(self.model, Embedder):
            return await self._late_interaction(self.model, query, documents, options, call)
        if options.mode is not None:
            raise InvalidInput(
                f"mode applies to an embedding model with bge-m3's heads; {self.spec.id!r} is a reranker", param="mode"
            )
        reranker = self._of(Reranker)

        def tokenize() -> list[Tokens]:
            return reranker.tokenize(
                query,
                documents,
                prompt_name=options.prompt_name,
                truncate=options.truncate,
                instruction=options.instruction,
            )

        tokens = await self._tokenize(tokenize, len(query) + sum(len(d) for d in documents), call)
        raw = await self._rows(tokens, call)
        return Scores(reranker.scores(np.stack(raw), raw_scores=options.raw_scores), sum(len(t) for t in tokens))

    async def _late_interaction(
        self, embedder: Embedder, query: str, documents: Sequence[str], options: RerankParams, call: Call
    ) -> Scores:
        """The query and each document embedded alone, then scored as FlagEmbedding's compute_score does
        (models.late_interaction): MaxSim over their multi-vectors, or with mode "hybrid" the weighted sum of
        dense, sparse and multi-vector scores. The query and the documents are one request's items; the query gets
        the request's prompt (or the model's default), the documents the model's document prompt where it has one."""
        if options.instruction is not None:
            raise InvalidInput(
                f"instruction applies to LLM rerankers; {self.spec.id!r} is an embedding model", param="instruction"
            )
        hybrid = options.mode == "hybrid"
        needs = (MULTIVECTOR, SPARSE) if hybrid else (MULTIVECTOR,)
        missing = [output for output in needs if output not in self.runner.outputs]
        if missing:
            heads = " and ".join({MULTIVECTOR: "colbert_linear.pt", SPARSE: "sparse_linear.pt"}[m] for m in missing)
            raise InvalidInput(
                f"model {self.spec.id!r} is an embedding model without bge-m3's {heads}: it cannot rerank"
                + (" in hybrid mode" if hybrid else ""),
                param="model",
            )
        document_prompt = prompt_for_task(self.prompts, "search_document")

        def tokenize() -> list[Tokens]:
            (asked,) = embedder.tokenize([query], prompt_name=options.prompt_name, truncate=options.truncate)
            return [asked, *embedder.tokenize(documents, prompt_name=document_prompt, truncate=options.truncate)]

        tokens = await self._tokenize(tokenize, len(query) + sum(len(d) for d in documents), call)
        work = [self._submit(tokens, call, await self._output_batcher(MULTIVECTOR))]
        if hybrid:
            work += [self._rows(tokens, call), self._submit(tokens, call, await self._output_batcher(SPARSE))]
        outputs = await asyncio.gather(*work)
        colbert = late_interaction.maxsim(outputs[0][0], outputs[0][1:])
        scores = colbert
        if hybrid:
            dense = embedder.finish(np.stack(outputs[1]), normalize=True)
            sparse = late_interaction.lexical_match(outputs[2][0], outputs[2][1:])
            scores = late_interaction.hybrid(dense[1:] @ dense[0], sparse, colbert, options.weights)
        return Scores(scores, sum(len(t) for t in tokens))

    async def classify(self, inputs: Sequence[TextOrPair], options: ClassifyParams, call: Call) -> Predictions:
        """Label scores per input (a text or a pair of texts)."""
        classifier = self._of(Classifier)

        def tokenize() -> list[Tokens]:
            return classifier.tokenize(inputs, prompt_name=options.prompt_name, truncate=options.truncate)

        chars = sum(len(x) if isinstance(x, str) else len(x[0]) + len(x[1]) for x in inputs)
        tokens = await self._tokenize(tokenize, chars, call)
        raw = await self._rows(tokens, call)
        return Predictions(classifier.scores(np.stack(raw), options.function), sum(len(t) for t in tokens))

    async def describe(
        self, texts: Sequence[str], *, add_special_tokens: bool, prompt_name: str | None
    ) -> list[list[TokenSpan]]:
        model = self.model
        prefix = model.prompt(prompt_name) if isinstance(model, Embedder) else ""
        texts = [prefix + text for text in texts] if prefix else texts

        def describe() -> list[list[TokenSpan]]:
            return self.runner.tokenizer.describe(texts, add_special_tokens=add_special_tokens)

        return await self._shared.off_loop(describe, sum(len(t) for t in texts))

    async def decode(self, sequences: Sequence[Sequence[int]], *, skip_special_tokens: bool) -> list[str]:
        def decode() -> list[str]:
            return self.runner.tokenizer.decode(sequences, skip_special_tokens=skip_special_tokens)

        return await self._shared.off_loop(decode, sum(len(ids) for ids in sequences) * 4)

    async def calibration(self, dimensions: int | None) -> np.ndarray:
        """Per-dimension [min, max] of the model's embeddings of the built-in calibration sentences, as
        its requests get them (the model's own normalization, cut to `dimensions`): what int8 and uint8
        outputs are scaled by. Computed once per size, by the first request that needs it."""
        if dimensions not in self._calibrations:
            self._calibrations[dimensions] = asyncio.ensure_future(self._calibrate(dimensions))
        try:
            return await asyncio.shield(self._calibrations[dimensions])
        except Exception:
            self._calibrations.pop(dimensions, None)  # the next request tries again
            raise

    async def _calibrate(self, dimensions: int | None) -> np.ndarray:
        result = await self.embed(list(SENTENCES), EmbedParams(dimensions=dimensions), Call(within=None))
        return calibration_ranges(result.vectors)

    # -- the item pipeline -----------------------------------------------------------------

    async def _output_batcher(self, output: str) -> Batcher[Tokens, Any]:
        batcher = self.output_batchers.get(output)
        if batcher is None:  # the model's own limits, as its main batcher has them
            main = self.batcher
            name = f"{self.spec.id}/{output}"
            batcher = self._shared.batcher(name, self.runner.outputs[output], main.config, main.padded)
            self.output_batchers[output] = batcher
            await batcher.start()
            if (measured := main.measured) is not None:  # the same model: its rate until this one measures its own
                batcher.seed(*measured)
        return batcher

    def _of(self, kind: type[T]) -> T:
        model = self.model
        if not isinstance(model, kind):  # the registry resolves names by kind: a route never asks amiss
            raise AssertionError(f"{self.spec.id} is a {self.spec.kind} model")
        return model

    async def _embedder_items(
        self, embedder: Embedder, inputs: Inputs, options: EmbedParams, call: Call
    ) -> list[Tokens]:
        """An embedding request's items: tokenized with its prompt and truncation, held to its `max_tokens`,
        then admitted."""

        def tokenize() -> list[Tokens]:
            return embedder.tokenize(inputs, prompt_name=options.prompt_name, truncate=options.truncate)

        return await self._tokenize(tokenize, sum(len(x) for x in inputs), call, options.max_tokens)

    async def _tokenize(
        self, tokenize: Callable[[], list[Tokens]], chars: int, call: Call, max_tokens: int | None = None
    ) -> list[Tokens]:
        """Tokenized off the event loop when large; refused (413) past `max_tokens`; then the call's admission
        may refuse the request for its token count, before it is queued."""
        with tracing.span("tokenize", characters=chars):
            tokens = await self._shared.off_loop(tokenize, chars)
        count = sum(len(t) for t in tokens)
        if max_tokens is not None and count > max_tokens:
            raise InputTooLong(
                f"the request has {count} input tokens, a row each in the answer; the limit is {max_tokens} a request",
                param="input",
            )
        if call.admit is not None:
            await call.admit(count)
        return tokens

    async def _rows(self, tokens: list[Tokens], call: Call) -> list[np.ndarray]:
        """The model's output for each item: from the response cache where it has it, from another
        request computing the same item now (single-flight), else from the batcher; only the misses queue."""
        shared = self._shared
        cache = shared.cache
        if cache is None or self.identity is None:
            return await self._submit(tokens, call)
        keys = [item_key(self.identity, t) for t in tokens]
        rows = await cache.lookup(keys, self._row_shape())
        own: dict[bytes, int] = {}  # what this request computes: first index of each distinct key
        waits: dict[int, asyncio.Future[np.ndarray]] = {}
        loop = asyncio.get_running_loop()
        for i, (key, row) in enumerate(zip(keys, rows)):
            if row is not None or key in own:
                continue
            if (computing := shared.computing.get(key)) is not None:
                waits[i] = computing
                continue
            own[key] = i
            future = shared.computing[key] = loop.create_future()
            future.add_done_callback(_retrieve)
        hits = len(keys) - len(own)
        self._cache_hits.inc(hits)
        self._cache_misses.inc(len(own))
        if own:
            try:
                computed = await self._submit([tokens[i] for i in own.values()], call)
            except BaseException as exc:
                for key in own:
                    shared.computing.pop(key).set_exception(_Abandoned(exc))
                raise
            fresh = {}
            for (key, i), row in zip(own.items(), computed):
                row = np.array(row, dtype=np.float32)  # a copy: a row of the batch would keep the batch alive
                rows[i] = fresh[key] = row
                shared.computing.pop(key).set_result(row)
            cache.store(fresh)
            self._observe_cache(cache)
        for i, future in waits.items():
            try:
                rows[i] = await asyncio.shield(future)
            except _Abandoned:  # its request failed or left: compute it here
                rows[i] = (await self._submit([tokens[i]], call))[0]
        for i, key in enumerate(keys):
            if rows[i] is None:  # a repeat within this request
                rows[i] = rows[own[key]]
        return rows  # type: ignore[return-value]

    def _observe_cache(self, cache: ResultCache) -> None:
        metrics, local = self._shared.metrics, cache.local
        metrics.cache_bytes.set(local.bytes)
        metrics.cache_entries.set(len(local))
        if local.evictions:
            metrics.cache_evictions.inc(local.evictions)
            local.evictions = 0
        if cache.shared is not None:
            metrics.cache_shared_degraded.set(1 if cache.shared.degraded else 0)

    async def _submit(self, tokens: list[Tokens], call: Call, batcher: Batcher | None = None) -> list[Any]:
        """Queues the request's items in the call's priority class; refused (429) when that class's queue is at its
        bound or the work queued ahead would outlast the call's deadline. Traced: its queue wait and batches."""
        timeline = tracing.timeline()
        try:
            rows = await (batcher or self.batcher).submit(
                tokens, [len(t) for t in tokens], within=call.within, timeline=timeline, priority=call.priority
            )
            tracing.record(timeline, self.spec.id)
            return rows
        except (QueueFull, RequestTooLarge) as exc:
            reason = "overload" if isinstance(exc, QueueFull) else "too_large"
            self._shared.metrics.rejections.labels(self.spec.id, reason).inc()
            raise

    def _row_shape(self) -> tuple[int, ...]:
        """The shape of one item's output: an embedding's dimension, or a classifier's logits (a scalar for
        a one-label reranker)."""
        dimension = self.info.width
        return () if self.spec.kind != "embed" and dimension == 1 else (dimension,)


class _Abandoned(Exception):
    """The request computing an item failed or left before it finished: whoever waited computes it."""


def _retrieve(future: asyncio.Future[np.ndarray]) -> None:
    """Marks an abandoned item's error as seen: nobody may have been waiting for it."""
    if not future.cancelled():
        future.exception()
