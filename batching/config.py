"""Batching limits, per model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BatchingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_tokens: int = Field(
        16384,
        gt=0,
        description="Tokens per batch, as the runner computes them: longest item x item count where it pads, "
        "the items' own lengths where it computes on real tokens only (no built-in runner does). Unset: 16384, on CPU the runner's own (4096 torch, 1536 ONNX).",
    )
    max_batch_size: int = Field(128, gt=0, description="Items per batch.")
    max_wait_ms: float = Field(
        2.0,
        ge=0,
        description="How long an idle worker waits for a fuller batch (not when requests have lately come "
        "further apart than this: a lone client's request would wait for nobody).",
    )
    min_fill: float = Field(
        0.8, ge=0, le=1, description="Least share of real (unpadded) tokens in a batch before it is split by length."
    )
    pad_tolerance_tokens: int = Field(
        32,
        ge=0,
        description="Padding one more item may add regardless of min_fill: about what another forward pass costs.",
    )
    arrival_window: int = Field(
        8,
        ge=0,
        description="Batches' worth (by max_batch_size and max_batch_tokens) of the oldest waiting items a batch is "
        "formed from; within them items are grouped by length, later ones wait their turn. So a request of many texts "
        "behind a backlog finishes about in its arrival order instead of with the whole backlog, whose batches each "
        "took a few of its texts. 0: the whole queue, grouped by length (the most homogeneous batches).",
    )
    bulk_share: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="While both priority classes wait, bulk work's share of the model's time, in the seconds its "
        "batches run (never two bulk batches in a row): ingestion keeps moving under a steady stream of queries. "
        "0 (the default): bulk runs only when no query waits, which kept queries' p99 at 0.9-1.0x of theirs alone "
        "in bench.priority, where 0.1 cost them 5.6-6.5x (bench/README.md).",
    )
    max_queue_tokens: int = Field(1_048_576, gt=0, description="Tokens waiting before new requests get 429.")
    max_queue_items: int = Field(16384, gt=0, description="Items waiting before new requests get 429.")
    workers: int = Field(
        1,
        gt=0,
        description="Batches run at once (threads sharing the model; on CPU they split torch's intra-op threads). "
        "Unset: the runner's own on CPU (2 for torch and ONNX, at most one per thread; ONNX 1 under a CPU quota "
        "below its threads), 1 elsewhere.",
    )

    def for_device(self, device: str, cpu_batch_tokens: int, cpu_workers: int = 1) -> BatchingConfig:
        """The limits for a model on `device`: on CPU, an unset token budget becomes the runner's own
        `cpu_batch_tokens` (what its speed and memory want there) and unset workers its `cpu_workers`;
        accelerators keep the defaults, since they need big batches to fill."""
        if device != "cpu":
            return self
        update: dict[str, int] = {}
        if "max_batch_tokens" not in self.model_fields_set:
            update["max_batch_tokens"] = cpu_batch_tokens
        if "workers" not in self.model_fields_set:
            update["workers"] = cpu_workers
        return self.model_copy(update=update) if update else self
