"""Priority classes: interactive work (the default) before bulk work. Bulk fills only the capacity interactive work
leaves, and an interactive item waits behind at most the bulk batches already running."""

from __future__ import annotations

import asyncio
import time

import pytest

from embedserve.batching.errors import QueueFull
from tests.batching.test_batcher import RecordingRunner, items, outputs, running, spawn, until

pytestmark = pytest.mark.timeout(60)


async def queued_as(batcher, priority: str, *specs: tuple[str, int]) -> asyncio.Future:  # type: ignore[no-untyped-def]
    before = batcher.queued_items
    task = spawn(batcher.submit(*items(*specs), priority=priority))
    await until(lambda: batcher.queued_items >= before + len(specs))
    return task


async def test_interactive_work_runs_before_bulk_work_queued_earlier() -> None:
    runner = RecordingRunner()
    async with running(runner, max_batch_size=2, max_wait_ms=0) as batcher:
        runner.hold()
        first = spawn(batcher.submit(*items(("bulk-0", 5)), priority="bulk"))
        await until(lambda: len(runner.batches) == 1)  # one bulk batch runs: the next waits in the queue
        backlog = await queued_as(batcher, "bulk", *[(f"bulk-{i}", 5) for i in range(1, 7)])
        query = await queued_as(batcher, "interactive", ("query", 5))
        runner.release()
        assert await query == outputs("query")
        await asyncio.gather(first, backlog)
    # The query waited behind the one bulk batch that was running, not behind the backlog queued before it.
    assert runner.batches[1] == [("query", 5)]
    assert [len(batch) for batch in runner.batches[2:]] == [2, 2, 2]


async def test_bulk_fills_what_interactive_work_leaves_and_loses_nothing() -> None:
    runner = RecordingRunner(delay=0.001)
    async with running(runner, max_batch_size=4, workers=2) as batcher:
        bulk = [batcher.submit(*items(*[((r, i), 8) for i in range(16)]), priority="bulk") for r in range(4)]
        queries = [batcher.submit(*items((("q", r), 3))) for r in range(20)]
        results = await asyncio.gather(*bulk, *queries)
    assert results[:4] == [outputs(*[(r, i) for i in range(16)]) for r in range(4)]
    assert results[4:] == [outputs(("q", r)) for r in range(20)]
    assert sorted(map(str, runner.seen)) == sorted(
        map(str, [*[(r, i) for r in range(4) for i in range(16)], *[("q", r) for r in range(20)]])
    )


async def test_a_batch_never_mixes_classes() -> None:
    runner = RecordingRunner()
    async with running(runner, max_batch_size=8, max_wait_ms=0) as batcher:
        runner.hold()
        first = spawn(batcher.submit(*items(("b0", 4)), priority="bulk"))
        await until(lambda: len(runner.batches) == 1)
        bulk = await queued_as(batcher, "bulk", ("b1", 4), ("b2", 4))
        query = await queued_as(batcher, "interactive", ("q1", 4), ("q2", 4))
        runner.release()
        await asyncio.gather(first, bulk, query)
    assert runner.batches[1:] == [[("q1", 4), ("q2", 4)], [("b1", 4), ("b2", 4)]]


async def test_each_class_has_its_own_queue_bound_and_an_interactive_wait_counts_only_work_ahead_of_it() -> None:
    runner = RecordingRunner(delay=0.001)
    async with running(runner, max_batch_size=1, max_wait_ms=0, max_queue_items=3) as batcher:
        await batcher.submit(*items(("warm", 4)))  # a batch measured: waits are known from now on
        runner.hold()
        first = spawn(batcher.submit(*items(("b0", 4)), priority="bulk"))
        await until(lambda: len(runner.batches) == 2)
        backlog = await queued_as(batcher, "bulk", ("b1", 4), ("b2", 4), ("b3", 4))
        with pytest.raises(QueueFull):
            await batcher.submit(*items(("b4", 4)), priority="bulk")
        assert batcher.full(priority="bulk") is not None
        assert batcher.full(priority="interactive") is None
        assert batcher.expected_wait("interactive") == 0 < batcher.expected_wait("bulk")
        assert batcher.full(0.0, priority="bulk") is not None and batcher.full(0.0, priority="interactive") is None
        query = await queued_as(batcher, "interactive", ("q", 4))  # the bulk queue's bound is not its own
        runner.release()
        await asyncio.gather(first, backlog, query)


async def test_a_cancelled_bulk_request_leaves_its_class_queue() -> None:
    runner = RecordingRunner()
    async with running(runner, max_batch_size=1, max_wait_ms=0) as batcher:
        runner.hold()
        first = spawn(batcher.submit(*items(("b0", 4)), priority="bulk"))
        await until(lambda: len(runner.batches) == 1)
        leaving = await queued_as(batcher, "bulk", ("gone-1", 4), ("gone-2", 4))
        leaving.cancel()
        await asyncio.gather(leaving, return_exceptions=True)
        assert batcher.queued_items == 0 and batcher.queued_tokens == 0
        runner.release()
        await first
    assert "gone-1" not in runner.seen


class TimedRunner(RecordingRunner):
    """A batch takes time in proportion to its padded tokens, as a model's does."""

    def __call__(self, payloads):  # type: ignore[no-untyped-def]
        results = super().__call__(payloads)
        time.sleep(max(length for _, length in payloads) * len(payloads) * 0.0002)
        return results


@pytest.mark.parametrize("share", [0.0, 0.1, 0.25, 0.5])
async def test_while_both_wait_bulk_gets_its_share_of_the_time_never_two_batches_in_a_row(share: float) -> None:
    runner = TimedRunner()
    async with running(runner, max_batch_size=2, max_wait_ms=0, bulk_share=share) as batcher:
        runner.hold()
        first = spawn(batcher.submit(*items(("warm", 4))))
        await until(lambda: len(runner.batches) == 1)
        # Bulk batches take twice as long as interactive ones: the share is of time, not of batches.
        bulk = await queued_as(batcher, "bulk", *[(f"B{i}", 8) for i in range(200)])
        queries = await queued_as(batcher, "interactive", *[(f"I{i}", 4) for i in range(200)])
        runner.release()
        await asyncio.gather(first, bulk, queries)
    batches = runner.batches[1:]
    last_query = next(i for i, batch in enumerate(batches) if ("I199", 4) in batch)
    both = batches[: last_query + 1]  # the batches taken while both classes waited
    classes = "".join(batch[0][0][0] for batch in both)
    assert "BB" not in classes
    bulk_tokens = sum(length for batch in both for tag, length in batch if tag.startswith("B"))
    all_tokens = sum(length for batch in both for _, length in batch)
    assert abs(bulk_tokens / all_tokens - share) < 0.06  # time follows tokens here
    if share == 0:
        assert classes == "I" * 100
