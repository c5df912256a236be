"""Batching limits, per model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BatchingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_tokens: int = Field(
        16384,
        gt=0,
        description="Padded tokens per batch: longest item x item count. Unset: 16384, on CPU 4096 (torch) or 1536 (ONNX); see for_device.",
    )
    max_batch_size: int = Field(128, gt=0, description="Items per batch.")
    max_wait_ms: float = Field(2.0, ge=0, description="How long an idle worker waits for a fuller batch.")
    min_fill: float = Field(
        0.8, ge=0, le=1, description="Least share of real (unpadded) tokens in a batch before it is split by length."
    )
    pad_tolerance_tokens: int = Field(
        32,
        ge=0,
        description="Padding one more item may add regardless of min_fill: about what another forward pass costs.",
    )
    max_queue_tokens: int = Field(1_048_576, gt=0, description="Tokens waiting before new requests get 429.")
    max_queue_items: int = Field(16384, gt=0, description="Items waiting before new requests get 429.")
    workers: int = Field(
        1,
        gt=0,
        description="Batches run at once (threads sharing the model; on CPU they split torch's intra-op threads).",
    )

    def for_device(self, device: str, backend: str = "torch") -> BatchingConfig:
        """The limits for a model on `device`: on CPU, an unset token budget becomes CPU_BATCH_TOKENS
        (ONNX_CPU_BATCH_TOKENS for the ONNX backends).

        A CPU gains no throughput past a few thousand padded tokens per forward pass (measured on
        MiniLM-L6: 4096 tokens ran at 4.3k tokens/s, 8192 at 3.6k), while every extra token adds
        latency for everyone in the batch; accelerators need big batches to fill. ONNX Runtime keeps
        a batch's activations in its arena for the life of the process, so the budget sets its
        resident memory under load: on MiniLM-L6, mixed load, 2 cores, 1536 tokens ran as fast as
        2048 and 4096 (ONNX fp32 and INT8, within the ±10% noise) with 13 and 85 MB less peak RSS
        (bench/README.md, "Memory"). Raise it with max_batch_tokens where many cores want more rows.
        """
        if device == "cpu" and "max_batch_tokens" not in self.model_fields_set:
            budget = ONNX_CPU_BATCH_TOKENS if backend.startswith("onnx") else CPU_BATCH_TOKENS
            return self.model_copy(update={"max_batch_tokens": budget})
        return self


CPU_BATCH_TOKENS = 4096
ONNX_CPU_BATCH_TOKENS = 1536
