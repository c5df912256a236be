"""Batching limits per device: an unset budget is the runner's own on CPU, the default elsewhere."""

from __future__ import annotations

from embedserve.batching.config import BatchingConfig
from embedserve.models.onnx_runner import CPU_BATCH_TOKENS as ONNX_CPU_BATCH_TOKENS
from embedserve.models.torch_loading import CPU_BATCH_TOKENS


def test_an_unset_token_budget_is_the_runners_own_on_cpu() -> None:
    default = BatchingConfig()
    assert default.for_device("cpu", CPU_BATCH_TOKENS).max_batch_tokens == CPU_BATCH_TOKENS == 4096
    assert default.for_device("cuda", CPU_BATCH_TOKENS).max_batch_tokens == 16384


def test_onnx_runners_want_a_smaller_cpu_budget_than_torch() -> None:
    # ONNX Runtime's arena keeps a batch's activations resident: the budget bounds its memory.
    assert ONNX_CPU_BATCH_TOKENS == 1536 < CPU_BATCH_TOKENS
    assert BatchingConfig().for_device("cuda", ONNX_CPU_BATCH_TOKENS).max_batch_tokens == 16384


def test_a_budget_someone_set_is_kept_on_every_device() -> None:
    chosen = BatchingConfig(max_batch_tokens=16384)
    assert chosen.for_device("cpu", 1536).max_batch_tokens == 16384
    assert BatchingConfig(max_batch_tokens=512).for_device("cuda", 1536).max_batch_tokens == 512


def test_unset_workers_are_the_runners_own_on_cpu_and_one_elsewhere() -> None:
    assert BatchingConfig().for_device("cpu", 4096, 2).workers == 2
    assert BatchingConfig().for_device("cuda", 4096, 2).workers == 1
    assert BatchingConfig(workers=3).for_device("cpu", 4096, 2).workers == 3
