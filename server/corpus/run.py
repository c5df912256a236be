"""A corpus embedded in-process: its texts go through the server's own path (ModelHost, the model's LocalModel,
its batcher, at bulk priority) a part at a time, several parts in flight so the batcher always has work to sort, and
each part is written as it completes (server.corpus.parts), in order."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedserve.batching.config import BatchingConfig
from embedserve.models.registry import ModelRegistry
from embedserve.models.spec import ModelSpec
from embedserve.server.corpus.parts import Job, Parts
from embedserve.server.corpus.progress import Progress
from embedserve.server.corpus.tables import Corpus, CorpusError
from embedserve.server.serving.model_host import ModelHost
from embedserve.server.serving.seam import Call, EmbedParams
from embedserve.server.telemetry.metrics import Metrics

UNBOUNDED_QUEUE = 1 << 40
"""The tool's own batcher has no clients to protect from a backlog: its queue bound is the parts in flight."""


@dataclass(frozen=True, slots=True)
class Outcome:
    rows: int
    resumed_at: int
    """Rows already embedded by an earlier, interrupted run."""
    seconds: float
    rate: float
    """Texts per second embedded by this run."""


async def embed_corpus(
    corpus: Corpus,
    out: Path,
    spec: ModelSpec,
    batching: BatchingConfig,
    options: EmbedParams,
    *,
    part_rows: int = 2048,
    parts_in_flight: int = 3,
    progress_every: int = 10_000,
) -> Outcome:
    batching = batching.model_copy(update={"max_queue_items": UNBOUNDED_QUEUE, "max_queue_tokens": UNBOUNDED_QUEUE})
    host = ModelHost(ModelRegistry([spec]), {spec.id: batching}, Metrics())
    await host.start()
    try:
        await host.wait_loaded()
        model = host.get(spec.id, "embed")
        rows = corpus.count()
        if rows == 0:
            raise CorpusError(f"{corpus.path}: no rows to embed")
        stat = corpus.path.stat()
        job = Job(
            str(corpus.path.resolve()),
            stat.st_size,
            stat.st_mtime_ns,
            rows,
            part_rows,
            spec.source,
            {"text_column": corpus.text_column, "id_column": corpus.id_column, **_options(options)},
        )
        parts = Parts(out, job)
        done_parts = parts.open()
        resumed_at = min(rows, done_parts * part_rows)
        progress = Progress(rows, resumed_at, every=progress_every)
        call = Call(priority="bulk")
        pending: deque[tuple[int, list[Any], asyncio.Task]] = deque()

        async def write_oldest() -> None:
            index, ids, task = pending.popleft()
            embeddings = await task
            await asyncio.to_thread(parts.write, index, ids, embeddings.vectors)
            progress.advance(len(ids))

        try:
            for index, (ids, texts) in enumerate(corpus.chunks(part_rows, skip=resumed_at), start=done_parts):
                pending.append((index, ids, asyncio.ensure_future(model.embed(texts, options, call))))
                if len(pending) >= parts_in_flight:
                    await write_oldest()
            while pending:
                await write_oldest()
        finally:
            for _, _, task in pending:
                task.cancel()
            progress.close()
        total_parts = -(-rows // part_rows)
        await asyncio.to_thread(parts.assemble, total_parts)
        return Outcome(rows, resumed_at, progress.seconds, progress.rate)
    finally:
        await host.close()


def _options(options: EmbedParams) -> dict[str, Any]:
    return {"dimensions": options.dimensions, "normalize": options.normalize, "prompt_name": options.prompt_name}
