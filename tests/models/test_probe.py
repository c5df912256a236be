"""The probe: one timed batch of long texts, within the batcher's limits, that a model's batcher starts from."""

from __future__ import annotations

from typing import Any

import pytest

from embedserve.models.loading import load_model
from embedserve.models.probe import PROBE_TEXT_TOKENS, PROBE_TOKENS, probe
from embedserve.models.spec import ModelSpec

KINDS = [
    ("tiny_bert_dir", "embed"),
    ("tiny_bert_reranker_dir", "rerank"),
    ("tiny_qwen3_reranker_dir", "rerank"),
    ("tiny_classifier_dir", "classify"),
]


@pytest.mark.parametrize(("folder", "kind"), KINDS, ids=[folder for folder, _ in KINDS])
def test_the_probe_times_one_batch_within_the_batchers_limits(
    folder: str, kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = request.getfixturevalue(folder)
    model = load_model(ModelSpec(backend="torch", id=folder, kind=kind, source=str(source), device="cpu")).model
    batches: list[list[Any]] = []
    run = model.runner.run

    def recording(batch: list[Any]) -> Any:
        batches.append(list(batch))
        return run(batch)

    monkeypatch.setattr(model.runner, "run", recording)
    for max_batch_tokens, max_batch_size in [(100_000, 128), (300, 128), (100_000, 2)]:
        measured = probe(model, max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size)
        batch = batches[-1]
        longest = max(len(tokens) for tokens in batch)
        assert measured.tokens == sum(len(tokens) for tokens in batch) and measured.seconds > 0
        assert measured.tokens_per_second == measured.tokens / measured.seconds
        assert len(batch) <= max_batch_size
        assert len(batch) == 1 or longest * len(batch) <= min(max_batch_tokens, PROBE_TOKENS)
        assert longest >= min(PROBE_TEXT_TOKENS, model.info.max_length) // 2, "long texts: the slowest tokens"
    assert len(batches) == 3
    roomy = batches[0]
    assert len(roomy) == max(1, PROBE_TOKENS // max(len(tokens) for tokens in roomy)), "a roomy budget: PROBE_TOKENS"
