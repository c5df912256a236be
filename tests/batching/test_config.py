"""Batching limits per device."""

from __future__ import annotations

from batching.config import CPU_BATCH_TOKENS, ONNX_CPU_BATCH_TOKENS, BatchingConfig


def test_an_unset_token_budget_is_smaller_on_cpu() -> None:
    default = BatchingConfig()
    assert default.for_device("cpu").max_batch_tokens == CPU_BATCH_TOKENS == 4096
    assert default.for_device("cuda").max_batch_tokens == 16384


def test_onnx_on_cpu_gets_a_smaller_budget_than_torch() -> None:
    # ONNX Runtime's arena keeps a batch's activations resident: the budget bounds its memory.
    default = BatchingConfig()
    for backend in ("onnx", "onnx-int8"):
        assert default.for_device("cpu", backend).max_batch_tokens == ONNX_CPU_BATCH_TOKENS == 1536
        assert default.for_device("cuda", backend).max_batch_tokens == 16384
    assert default.for_device("cpu", "torch").max_batch_tokens == CPU_BATCH_TOKENS
    assert BatchingConfig(max_batch_tokens=8192).for_device("cpu", "onnx").max_batch_tokens == 8192


def test_a_budget_someone_set_is_kept_on_every_device() -> None:
    chosen = BatchingConfig(max_batch_tokens=16384)
    assert chosen.for_device("cpu").max_batch_tokens == 16384
    assert BatchingConfig(max_batch_tokens=512).for_device("cuda").max_batch_tokens == 512
