"""The micro-batcher: requests queue items, worker threads run batches, results come back.

The batcher knows nothing of models: it calls `run_batch(payloads) -> results` in a worker
thread. These tests give it a recording runner that notes every batch it is handed and can be
held at a gate, slowed down, or made to fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from embedserve.batching.batcher import DEADLINE_SHARE, Batcher
from embedserve.batching.config import BatchingConfig
from embedserve.batching.errors import BatchFailed, QueueFull, RequestTooLarge, ShuttingDown
from tests.support import FakeClock

pytestmark = pytest.mark.timeout(60)  # a hang fails the test instead of the run


# -- test doubles ----------------------------------------------------------------------------


class RecordingRunner:
    """Stands in for a model. Payloads are (tag, length) pairs; the result for one is ("out", tag).

    `hold()` makes every batch wait at a gate until `release()`; `fail_on` makes a batch holding
    that tag raise; `delay` makes every batch take that long.
    """

    def __init__(self, *, delay: float = 0.0, fail_on: set[Any] | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on or set()
        self.batches: list[list[tuple[Any, int]]] = []
        self.threads: set[str] = set()
        self._gate = threading.Event()
        self._gate.set()
        self._lock = threading.Lock()

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def __call__(self, payloads: list[tuple[Any, int]]) -> list[tuple[str, Any]]:
        with self._lock:
            self.batches.append(list(payloads))
            self.threads.add(threading.current_thread().name)
        if not self._gate.wait(timeout=10):
            raise TimeoutError("the test never released the runner")
        if self.delay:
            time.sleep(self.delay)
        failing = [tag for tag, _ in payloads if tag in self.fail_on]
        if failing:
            raise RuntimeError(f"cannot embed {failing[0]}")
        return [("out", tag) for tag, _ in payloads]

    @property
    def seen(self) -> list[Any]:
        return [tag for batch in self.batches for tag, _ in batch]

    def lengths(self) -> list[list[int]]:
        return [[length for _, length in batch] for batch in self.batches]


class RecordingObserver:
    def __init__(self) -> None:
        self.queue: list[tuple[int, int]] = []
        self.batches: list[dict[str, float]] = []

    def on_queue(self, items: int, tokens: int) -> None:
        self.queue.append((items, tokens))

    def on_batch(self, size: int, tokens: int, padded_tokens: int, queue_seconds: float, run_seconds: float) -> None:
        self.batches.append(dict(size=size, tokens=tokens, padded=padded_tokens, queued=queue_seconds, ran=run_seconds))


def items(*specs: tuple[Any, int]) -> tuple[list[tuple[Any, int]], list[int]]:
    """Payloads and costs for `submit` from (tag, length) pairs."""
    return list(specs), [length for _, length in specs]


async def submit(batcher: Batcher, *specs: tuple[Any, int]) -> list[Any]:
    return await batcher.submit(*items(*specs))


def outputs(*tags: Any) -> list[tuple[str, Any]]:
    return [("out", tag) for tag in tags]


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Waits for a worker thread to reach a state; the timeout only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for a condition"
        await asyncio.sleep(0.001)


_spawned: list[asyncio.Future[Any]] = []


def spawn(coro: Any) -> asyncio.Future[Any]:
    """A task the test awaits itself; `running` collects any left over when a test fails early."""
    task = asyncio.ensure_future(coro)
    _spawned.append(task)
    return task


@contextlib.asynccontextmanager
async def running(
    runner: RecordingRunner, observer: RecordingObserver | None = None, *, clock: FakeClock | None = None, **config: Any
) -> AsyncIterator[Batcher]:
    config.setdefault("max_wait_ms", 1)
    batcher: Batcher = Batcher(runner, BatchingConfig(**config), name="test", observer=observer, clock=clock)
    await batcher.start()
    try:
        yield batcher
    finally:
        runner.release()
        await asyncio.wait_for(batcher.close(drain=False), 5)
        leftovers = [task for task in _spawned if not task.done()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*_spawned, return_exceptions=True)
        _spawned.clear()


async def first_batch_running(batcher: Batcher, runner: RecordingRunner, tag: Any = "first") -> asyncio.Future[Any]:
    """Holds the runner and puts one batch on it, so that what is submitted next waits in the queue."""
    runner.hold()
    task = spawn(submit(batcher, (tag, 1)))
    await until(lambda: len(runner.batches) == 1)
    return task


async def queued(batcher: Batcher, *specs: tuple[Any, int]) -> asyncio.Future[Any]:
    """Submits in a task and returns once its items are in the queue."""
    before = batcher.queued_items
    task = spawn(submit(batcher, *specs))
    await until(lambda: batcher.queued_items >= before + len(specs))
    return task


async def cancel_while_queued(batcher: Batcher, runner: RecordingRunner, *specs: tuple[Any, int]) -> None:
    """A request queued behind a running batch and cancelled there; then that batch ends."""
    first = await first_batch_running(batcher, runner)
    gone = await queued(batcher, *specs)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    runner.release()
    await first


# -- results ----------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
async def test_each_request_gets_its_own_results_in_input_order(workers: int) -> None:
    rng = random.Random(workers)
    runner = RecordingRunner(delay=0.001)
    requests = [[((r, i), rng.randint(1, 64)) for i in range(rng.randint(1, 9))] for r in range(40)]
    async with running(runner, max_batch_size=5, max_wait_ms=1, workers=workers) as batcher:
        results = await asyncio.gather(*(submit(batcher, *request) for request in requests))
    for request, result in zip(requests, results):
        assert result == outputs(*(tag for tag, _ in request))
    # Every item ran exactly once, and batches did mix requests.
    assert sorted(runner.seen) == sorted(tag for request in requests for tag, _ in request)
    assert any(len({r for (r, _), _ in batch}) > 1 for batch in runner.batches)
    assert all(len(batch) <= 5 for batch in runner.batches)
    if workers > 1:
        assert len(runner.threads) > 1


async def test_a_request_spread_over_several_batches_is_reassembled_in_order() -> None:
    runner = RecordingRunner()
    request = [(i, length) for i, length in enumerate([90, 3, 50, 7, 7, 120, 1, 64])]
    async with running(runner, max_batch_size=2) as batcher:
        assert await submit(batcher, *request) == outputs(*range(8))
    assert len(runner.batches) >= 4
    assert sorted(runner.seen) == list(range(8))


async def test_a_finished_request_is_freed_without_the_garbage_collector() -> None:
    """A queued request and its items point at each other; once it is answered, cancelled or failed the link is
    cut, so reference counting frees it. Left as cycles, every request was the collector's to find: on the
    event loop's thread, between requests."""
    runner = RecordingRunner(fail_on={"bad"})
    async with running(runner) as batcher:
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable is kept in gc.garbage to look at
        try:
            await cancel_while_queued(batcher, runner, ("gone", 5))
            assert await submit(batcher, ("a", 5), ("b", 9)) == outputs("a", "b")
            with pytest.raises(BatchFailed):
                await submit(batcher, ("bad", 5))
            gc.collect()
            cycles = [type(o).__name__ for o in gc.garbage if type(o).__name__ in ("_Request", "_Item")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert cycles == []


async def test_submit_needs_a_started_batcher() -> None:
    batcher: Batcher = Batcher(RecordingRunner(), BatchingConfig())
    with pytest.raises(ShuttingDown):
        await submit(batcher, ("a", 1))


# -- forming batches from the queue ---------------------------------------------------------


async def test_batches_from_a_full_queue_are_windows_of_the_queue_sorted_by_length() -> None:
    runner = RecordingRunner()
    lengths = list(range(1, 41))
    random.Random(1).shuffle(lengths)
    request = [(i, length) for i, length in enumerate(lengths)]  # arrival order = tag
    async with running(runner, max_batch_size=6, max_batch_tokens=4096) as batcher:
        first = await first_batch_running(batcher, runner)
        task = await queued(batcher, *request)
        runner.release()
        assert await task == outputs(*range(40))
        await first
    waiting = sorted(request, key=lambda item: (item[1], item[0]))
    for batch in runner.batches[1:]:
        # Sorted by length, contiguous in the length order of what was waiting, and holding the oldest.
        assert [length for _, length in batch] == sorted(length for _, length in batch)
        start = waiting.index(batch[0])
        assert waiting[start : start + len(batch)] == batch
        assert min(waiting)[0] in [tag for tag, _ in batch]
        del waiting[start : start + len(batch)]
    assert waiting == []


async def test_short_and_long_items_queued_together_run_in_separate_batches() -> None:
    runner = RecordingRunner()
    request = [(i, 8) for i in range(12)] + [(12 + i, 500) for i in range(3)]
    random.Random(2).shuffle(request)
    request.insert(0, ("oldest", 8))
    async with running(runner, max_batch_size=64) as batcher:
        first = await first_batch_running(batcher, runner)
        task = await queued(batcher, *request)
        runner.release()
        await task
        await first
    assert sorted(map(sorted, runner.lengths()[1:])) == [[8] * 13, [500] * 3]


async def test_the_token_budget_bounds_every_batch_and_an_oversized_item_runs_alone() -> None:
    runner = RecordingRunner()
    rng = random.Random(4)
    request = [(i, rng.randint(1, 40)) for i in range(30)] + [("huge", 100)]
    async with running(runner, max_batch_tokens=64, max_batch_size=64) as batcher:
        first = await first_batch_running(batcher, runner)
        task = await queued(batcher, *request)
        runner.release()
        assert await task == outputs(*(tag for tag, _ in request))
        await first
    for lengths in runner.lengths():
        assert len(lengths) == 1 or max(lengths) * len(lengths) <= 64, lengths
    assert [("huge", 100)] in runner.batches


def _finishing_batches(runner: RecordingRunner, requests: int) -> list[int]:
    """For each request (tags are (request, index) pairs), the index of the batch its last item ran in."""
    last = [0] * requests
    for number, batch in enumerate(runner.batches):
        for (request, _), _ in batch:
            last[request] = number
    return last


async def _run_backlog(arrival_window: int, seed: int) -> tuple[RecordingRunner, list[int]]:
    """Sixteen requests of sixteen texts of random lengths (1-200 tokens), queued behind a held batch and run in
    batches of at most eight: returns the runner and the batch each request finished in."""
    runner = RecordingRunner()
    rng = random.Random(seed)
    requests = [[((r, i), rng.randint(1, 200)) for i in range(16)] for r in range(16)]
    async with running(runner, max_batch_size=8, max_batch_tokens=4096, arrival_window=arrival_window) as batcher:
        first = await first_batch_running(batcher, runner, tag=(-1, 0))
        tasks = [await queued(batcher, *request) for request in requests]
        runner.release()
        for task, request in zip(tasks, requests):
            assert await task == outputs(*(tag for tag, _ in request))
        await first
    runner.batches.pop(0)  # the held one
    return runner, _finishing_batches(runner, len(requests))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_behind_a_backlog_requests_of_many_texts_finish_in_arrival_order(seed: int) -> None:
    # A window of four batches' worth (32 texts: two requests) forms each batch from the oldest waiting texts.
    runner, finished = await _run_backlog(arrival_window=4, seed=seed)
    # No request finishes after one that arrived two or more requests later (the window holds two at a time) ...
    assert all(finished[r] <= finished[later] for r in range(16) for later in range(r + 2, 16)), finished
    # ... so the median request finishes about halfway through the backlog, not at its end.
    assert sorted(finished)[8] <= 0.7 * len(runner.batches), finished
    for batch in runner.lengths():
        assert batch == sorted(batch)  # still grouped by length within the window
        assert len(batch) <= 8


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_with_the_window_off_a_request_of_many_texts_waits_for_about_the_whole_backlog(seed: int) -> None:
    # The whole queue grouped by length: each batch takes a few texts of many requests, so most requests end in
    # the backlog's last batches. Fewer batches, though: each is formed from more texts of like length.
    runner, finished = await _run_backlog(arrival_window=0, seed=seed)
    assert sorted(finished)[8] >= 0.85 * len(runner.batches), finished
    windowed, _ = await _run_backlog(arrival_window=4, seed=seed)
    assert len(runner.batches) <= len(windowed.batches)


async def test_the_arrival_window_is_bounded_by_tokens_too() -> None:
    # Batches of up to 64 items but 64 padded tokens: a window of one batch's worth holds about 64 tokens of the
    # oldest items, so the later request's short texts do not jump ahead of the first request's long ones.
    runner = RecordingRunner()
    older = [(("old", i), 16) for i in range(8)]  # 128 tokens: two batches of four
    newer = [(("new", i), 1) for i in range(8)]
    async with running(runner, max_batch_size=64, max_batch_tokens=64, arrival_window=1) as batcher:
        first = await first_batch_running(batcher, runner, tag=("held", 0))
        tasks = [await queued(batcher, *older), await queued(batcher, *newer)]
        runner.release()
        await asyncio.gather(*tasks, first)
    kinds = [{kind for (kind, _), _ in batch} for batch in runner.batches[1:]]
    assert kinds[:2] == [{"old"}, {"old"}], kinds


# -- waiting for a fuller batch ---------------------------------------------------------------
# These run on a FakeClock: time passes only when the test advances it, so they say exactly when a
# batch may start, whatever the machine's speed.


async def settle() -> None:
    """Lets the event loop run everything that is ready (the scheduler included)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_lone_item_waits_exactly_max_wait_for_company() -> None:
    clock, runner = FakeClock(), RecordingRunner()
    async with running(runner, clock=clock, max_wait_ms=125) as batcher:
        task = await queued(batcher, ("a", 5))
        await settle()
        assert clock.pending == [clock.now + 0.125]
        clock.advance(0.124)
        await settle()
        assert batcher.queued_items == 1 and not runner.batches
        clock.advance(0.001)
        assert await task == outputs("a")


async def test_items_arriving_within_max_wait_join_the_same_batch() -> None:
    clock, runner = FakeClock(), RecordingRunner()
    async with running(runner, clock=clock, max_wait_ms=125) as batcher:
        a = await queued(batcher, ("a", 5))
        clock.advance(0.0625)
        b = await queued(batcher, ("b", 5))
        await settle()
        assert batcher.queued_items == 2
        clock.advance(0.0625)  # the oldest item's deadline, not the newest's
        assert await a == outputs("a")
        assert await b == outputs("b")
    assert runner.batches == [[("a", 5), ("b", 5)]]


async def test_when_requests_come_further_apart_than_max_wait_a_lone_one_does_not_wait() -> None:
    clock, runner = FakeClock(), RecordingRunner()
    async with running(runner, clock=clock, max_wait_ms=125) as batcher:
        waited = []
        for name in "abcdefgh":  # one client, a request a second: nobody will come to share a batch
            task = spawn(submit(batcher, (name, 5)))
            await settle()
            waited.append(bool(clock.pending))  # a timer is pending only while an item waits for company
            clock.advance(0.125)
            assert await task == outputs(name)
            clock.advance(1.0)
        # The first requests wait as before (no gaps known yet); once the gaps are known, none waits.
        assert waited[0] and not any(waited[-3:])
        # Requests come close together again: a lone one then waits for company as before.
        burst = []
        for i in range(25):
            burst.append(spawn(submit(batcher, (f"burst{i}", 5))))
            await settle()
            clock.advance(0.001)
        clock.advance(0.2)
        await asyncio.gather(*burst)
        task = spawn(submit(batcher, ("q", 5)))
        await settle()
        assert clock.pending == [clock.now + 0.125]
        clock.advance(0.125)
        assert await task == outputs("q")


async def test_a_full_batch_does_not_wait() -> None:
    clock, runner = FakeClock(), RecordingRunner()
    async with running(runner, clock=clock, max_wait_ms=2000, max_batch_size=4) as batcher:
        await submit(batcher, ("a", 1), ("b", 1), ("c", 1), ("d", 1))  # the clock never moves
    assert len(runner.batches) == 1


async def test_a_batch_filling_the_token_budget_does_not_wait() -> None:
    clock, runner = FakeClock(), RecordingRunner()
    async with running(runner, clock=clock, max_wait_ms=2000, max_batch_tokens=100) as batcher:
        await submit(batcher, ("a", 50), ("b", 50))
    assert runner.lengths() == [[50, 50]]


async def test_a_batch_full_in_padded_tokens_does_not_wait() -> None:
    # 10 + 50 is 100 padded tokens: nothing else can join, so waiting only adds latency.
    clock, runner = FakeClock(), RecordingRunner()
    async with running(runner, clock=clock, max_wait_ms=600, max_batch_tokens=100, min_fill=0) as batcher:
        await submit(batcher, ("a", 10), ("b", 50))
    assert runner.lengths() == [[10, 50]]


async def test_an_item_that_waited_behind_a_running_batch_does_not_wait_again() -> None:
    clock, runner = FakeClock(), RecordingRunner()
    async with running(runner, clock=clock, max_wait_ms=300) as batcher:
        first = spawn(submit(batcher, ("first", 1)))
        await settle()
        runner.hold()
        clock.advance(0.3)
        await until(lambda: len(runner.batches) == 1)
        second = await queued(batcher, ("second", 1))
        clock.advance(0.4)  # longer than max_wait, while no worker is free: "second" has waited enough
        runner.release()
        await first
        assert await second == outputs("second")  # with the clock standing still


async def test_with_no_max_wait_a_lone_item_runs_at_once() -> None:
    clock, runner = FakeClock(), RecordingRunner()
    async with running(runner, clock=clock, max_wait_ms=0) as batcher:
        assert await submit(batcher, ("a", 1)) == outputs("a")
    assert clock.pending == []


async def test_the_observer_is_told_how_long_a_batch_queued() -> None:
    clock, runner, observer = FakeClock(), RecordingRunner(), RecordingObserver()
    async with running(runner, observer, clock=clock, max_wait_ms=250) as batcher:
        task = await queued(batcher, ("a", 3))
        await settle()
        clock.advance(0.25)
        await task
    assert [batch["queued"] for batch in observer.batches] == [0.25]


# -- fairness ---------------------------------------------------------------------------------


async def test_a_long_item_is_served_while_short_items_keep_arriving() -> None:
    # Short items arrive faster than they are served; the long one pads too much to join them.
    runner = RecordingRunner(delay=0.002)
    arrival = itertools.count()
    shorts: list[asyncio.Future[Any]] = []

    async def short() -> None:
        tag = next(arrival)
        await submit(batcher, (tag, 2))

    async with running(runner, max_batch_size=2, max_wait_ms=1, pad_tolerance_tokens=0) as batcher:
        shorts += [spawn(short()) for _ in range(10)]
        await asyncio.sleep(0.005)
        long_tag = next(arrival)
        long = spawn(submit(batcher, (long_tag, 400)))
        deadline = time.monotonic() + 3
        while not long.done() and time.monotonic() < deadline:
            shorts += [spawn(short()) for _ in range(4)]
            await asyncio.sleep(0.001)
        assert long.done(), "the long item starved"
        assert long.result() == outputs(long_tag)
        assert batcher.queued_items > 0, "short items should still have been waiting"
        await asyncio.gather(*shorts)
    # It waited only for batches anchored on items older than itself.
    long_batch = next(i for i, batch in enumerate(runner.batches) if batch == [(long_tag, 400)])
    for batch in runner.batches[:long_batch]:
        assert min(tag for tag, _ in batch) < long_tag


# -- cancellation -----------------------------------------------------------------------------


async def test_a_cancelled_request_never_reaches_the_runner_and_others_are_unaffected() -> None:
    runner = RecordingRunner()
    async with running(runner) as batcher:
        first = await first_batch_running(batcher, runner)
        gone = await queued(batcher, ("gone-1", 5), ("gone-2", 7), ("gone-3", 5))
        stays = await queued(batcher, ("stays-1", 5), ("stays-2", 6))
        assert (batcher.queued_items, batcher.queued_tokens) == (5, 28)

        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert (batcher.queued_items, batcher.queued_tokens) == (2, 11)

        runner.release()
        assert await stays == outputs("stays-1", "stays-2")
        assert await first == outputs("first")
    assert not any(str(tag).startswith("gone") for tag in runner.seen)


async def test_cancelling_mid_request_drops_only_the_items_not_yet_started() -> None:
    runner = RecordingRunner()
    async with running(runner, max_batch_size=2) as batcher:
        runner.hold()
        request = spawn(submit(batcher, *[(i, 5) for i in range(6)]))
        await until(lambda: len(runner.batches) == 1)
        assert batcher.queued_items == 4
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert (batcher.queued_items, batcher.queued_tokens) == (0, 0)
        runner.release()
        assert await submit(batcher, ("next", 5)) == outputs("next")
    assert runner.seen == [0, 1, "next"]


async def test_cancelling_everything_while_the_scheduler_waits_leaves_it_working() -> None:
    clock, runner = FakeClock(), RecordingRunner()
    async with running(runner, clock=clock, max_wait_ms=50) as batcher:
        gone = await queued(batcher, ("gone", 3))
        await settle()
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        clock.advance(0.08)  # past the cancelled item's deadline
        await settle()
        task = await queued(batcher, ("next", 3))
        await settle()
        clock.advance(0.05)
        assert await task == outputs("next")
    assert runner.seen == ["next"]


# -- failures ---------------------------------------------------------------------------------


async def test_a_failing_batch_fails_only_its_own_requests() -> None:
    runner = RecordingRunner(fail_on={"bad"})
    async with running(runner, max_batch_size=2) as batcher:
        first = await first_batch_running(batcher, runner)
        bad = await queued(batcher, ("bad", 5))
        unlucky = await queued(batcher, ("unlucky", 5))  # same batch as "bad"
        fine = await queued(batcher, ("fine-1", 5), ("fine-2", 5))  # the next batch
        runner.release()

        with pytest.raises(BatchFailed) as failed:
            await bad
        assert isinstance(failed.value.cause, RuntimeError)
        assert "cannot embed bad" in str(failed.value)
        with pytest.raises(BatchFailed):
            await unlucky
        assert await fine == outputs("fine-1", "fine-2")
        assert await first == outputs("first")
        # The batcher keeps working after a failure.
        assert await submit(batcher, ("later", 5)) == outputs("later")
    assert runner.lengths() == [[1], [5, 5], [5, 5], [5]]


async def test_a_failed_requests_other_queued_items_are_dropped() -> None:
    runner = RecordingRunner(fail_on={"bad"})
    async with running(runner, max_batch_size=1) as batcher:
        first = await first_batch_running(batcher, runner)
        doomed = await queued(batcher, ("bad", 1), ("rest-1", 2), ("rest-2", 3))
        other = await queued(batcher, ("other", 4))
        runner.release()
        with pytest.raises(BatchFailed):
            await doomed
        assert await other == outputs("other")
        await first
        assert (batcher.queued_items, batcher.queued_tokens) == (0, 0)
    assert runner.seen == ["first", "bad", "other"]


async def test_a_runner_returning_the_wrong_number_of_results_fails_the_batch() -> None:
    class ShortRunner(RecordingRunner):
        def __call__(self, payloads: list[tuple[Any, int]]) -> list[tuple[str, Any]]:
            return super().__call__(payloads)[:-1]

    async with running(ShortRunner(), max_wait_ms=20) as batcher:
        with pytest.raises(BatchFailed, match="wrong number of results"):
            await submit(batcher, ("a", 1), ("b", 1))


# -- backpressure -----------------------------------------------------------------------------


async def refused(submission: Any) -> BaseException | None:
    """The error a submission fails with before any time passes or any batch finishes (None: it did not)."""
    task = spawn(submission)
    await settle()
    return task.exception() if task.done() else None


async def test_past_max_queue_items_submit_is_refused_at_once_and_queued_work_completes() -> None:
    runner = RecordingRunner()
    async with running(runner, max_queue_items=4) as batcher:
        first = await first_batch_running(batcher, runner)
        waiting = await queued(batcher, ("a", 1), ("b", 1), ("c", 1))
        last_seat = await queued(batcher, ("d", 1))  # exactly at the bound: accepted
        full = await refused(submit(batcher, ("e", 1)))
        assert isinstance(full, QueueFull) and full.retry_after > 0
        assert batcher.queued_items == 4
        runner.release()
        assert await waiting == outputs("a", "b", "c")
        assert await last_seat == outputs("d")
        await first
        assert await submit(batcher, ("e", 1)) == outputs("e")  # room again
    assert runner.seen.count("e") == 1


async def test_past_max_queue_tokens_submit_is_refused_at_once_and_queued_work_completes() -> None:
    runner = RecordingRunner()
    async with running(runner, max_queue_tokens=100) as batcher:
        first = await first_batch_running(batcher, runner)
        waiting = await queued(batcher, ("a", 50), ("b", 30))
        full = await refused(submit(batcher, ("c", 21)))
        assert isinstance(full, QueueFull) and full.retry_after > 0
        fits = await queued(batcher, ("d", 20))  # 100 exactly: accepted
        assert batcher.queued_tokens == 100
        runner.release()
        assert await waiting == outputs("a", "b")
        assert await fits == outputs("d")
        await first
    assert "c" not in runner.seen


async def test_a_request_larger_than_the_whole_queue_is_too_large_not_full() -> None:
    runner = RecordingRunner()
    async with running(runner, max_queue_items=3, max_queue_tokens=50) as batcher:
        with pytest.raises(RequestTooLarge) as too_many:
            await submit(batcher, ("a", 1), ("b", 1), ("c", 1), ("d", 1))
        assert too_many.value.limit == 3
        with pytest.raises(RequestTooLarge) as too_long:
            await submit(batcher, ("a", 30), ("b", 21))
        assert too_long.value.limit == 50
        assert batcher.queued_items == 0
        assert await submit(batcher, ("a", 25), ("b", 25)) == outputs("a", "b")
    assert runner.seen == ["a", "b"]


# -- shutdown ---------------------------------------------------------------------------------


async def test_close_with_drain_finishes_queued_work_then_refuses_new_work() -> None:
    runner = RecordingRunner()
    async with running(runner, max_batch_size=2) as batcher:
        first = await first_batch_running(batcher, runner)
        waiting = [await queued(batcher, (f"q{i}", 3)) for i in range(5)]
        closing = spawn(batcher.close(drain=True))
        await asyncio.sleep(0.02)
        assert not closing.done()  # still draining
        with pytest.raises(ShuttingDown):
            await submit(batcher, ("late", 1))
        runner.release()
        await asyncio.wait_for(closing, 5)
        assert all(task.done() for task in waiting)
        assert [task.result() for task in waiting] == [outputs(f"q{i}") for i in range(5)]
        assert await first == outputs("first")
        with pytest.raises(ShuttingDown):
            await submit(batcher, ("after", 1))
    assert sorted(runner.seen) == sorted(["first"] + [f"q{i}" for i in range(5)])


async def test_close_without_drain_fails_queued_work_and_finishes_the_running_batch() -> None:
    runner = RecordingRunner()
    async with running(runner) as batcher:
        first = await first_batch_running(batcher, runner)
        waiting = await queued(batcher, ("q", 3))
        closing = spawn(batcher.close(drain=False))
        with pytest.raises(ShuttingDown):
            await waiting
        runner.release()
        await asyncio.wait_for(closing, 5)
        assert await first == outputs("first")
    assert runner.seen == ["first"]


async def test_closing_an_idle_batcher_is_prompt() -> None:
    batcher: Batcher = Batcher(RecordingRunner(), BatchingConfig())
    await batcher.start()
    closing = asyncio.ensure_future(batcher.close(drain=True))
    await settle()
    assert closing.done()
    with pytest.raises(ShuttingDown):
        await submit(batcher, ("a", 1))


# -- observing --------------------------------------------------------------------------------


async def test_the_observer_sees_every_batch_and_queue_change_with_consistent_numbers() -> None:
    runner = RecordingRunner(delay=0.02)
    observer = RecordingObserver()
    async with running(runner, observer, max_batch_size=8, max_wait_ms=40) as batcher:
        # [2, 4, 5, 9] and [30] run apart: 30 would pad the others too much.
        request = [("a", 4), ("b", 9), ("c", 2), ("d", 30), ("e", 5)]
        assert await submit(batcher, *request) == outputs("a", "b", "c", "d", "e")
        assert observer.queue[0] == (5, 50)  # the whole request, once queued
        assert observer.queue[-1] == (0, 0)
        assert (batcher.queued_items, batcher.queued_tokens) == (0, 0)

    assert runner.lengths() == [[2, 4, 5, 9], [30]]
    assert len(observer.batches) == len(runner.batches)
    for seen, lengths in zip(observer.batches, runner.lengths()):
        assert seen["size"] == len(lengths)
        assert seen["tokens"] == sum(lengths)
        assert seen["padded"] == max(lengths) * len(lengths)
        assert seen["ran"] >= 0.019
        assert seen["queued"] >= 0
    assert observer.batches[0]["queued"] >= 0.035  # the first batch waited max_wait for company
    assert observer.batches[1]["queued"] >= observer.batches[0]["queued"] + 0.019  # ... the second, for a worker
    # The queue only ever shrinks after the submit, by each batch taken, down to empty.
    items_left = [items for items, _ in observer.queue]
    assert items_left == sorted(items_left, reverse=True)
    taken = [before - after for (before, _), (after, _) in zip(observer.queue, observer.queue[1:])]
    assert taken == [len(batch) for batch in runner.batches]


async def test_the_observer_sees_dropped_items_leave_the_queue() -> None:
    runner = RecordingRunner()
    observer = RecordingObserver()
    async with running(runner, observer) as batcher:
        await cancel_while_queued(batcher, runner, ("gone", 7))
    assert observer.queue == [(1, 1), (0, 0), (1, 7), (0, 0)]


async def test_retry_after_reflects_measured_throughput() -> None:
    # 1000 tokens in ~0.1 s: about 10,000 tokens a second, so 30,000 queued tokens take ~3 s.
    runner = RecordingRunner(delay=0.1)
    async with running(runner, max_queue_tokens=30_000, max_batch_tokens=100_000) as batcher:
        await submit(batcher, *[(i, 100) for i in range(10)])
        first = await first_batch_running(batcher, runner)
        waiting = await queued(batcher, ("big", 29_999))
        with pytest.raises(QueueFull) as full:
            await submit(batcher, ("more", 2))
        assert 1.5 < full.value.retry_after < 4
        runner.release()
        await first
        await waiting


async def both_workers_held(batcher: Batcher, runner: RecordingRunner) -> list[asyncio.Future[Any]]:
    """Holds the runner and puts a one-item batch on each of two workers: what is submitted next waits."""
    runner.hold()
    busy = []
    for tag in ("first", "second"):
        batches = len(runner.batches)
        busy.append(spawn(submit(batcher, (tag, 1))))
        await until(lambda: len(runner.batches) > batches)  # noqa: B023  (awaited within the iteration)
    return busy


async def test_retry_after_with_two_workers_is_the_expected_wait_of_both_together() -> None:
    # Two batches of 1000 tokens run side by side in ~0.1 s: two workers clear 30,000 queued tokens in ~1.5 s.
    runner = RecordingRunner(delay=0.1)
    config = dict(workers=2, max_batch_size=10, max_queue_tokens=30_000, max_batch_tokens=100_000)
    async with running(runner, **config) as batcher:
        await submit(batcher, *[(i, 100) for i in range(20)])  # two batches at once: the measured throughput
        assert len(runner.batches) == 2
        busy = await both_workers_held(batcher, runner)
        waiting = await queued(batcher, ("big", 29_999))
        wait = batcher.expected_wait()
        assert wait is not None and 1 < wait < 2
        with pytest.raises(QueueFull) as full:
            await submit(batcher, ("more", 2))
        assert full.value.retry_after == pytest.approx(wait)
        assert batcher.full() == pytest.approx(wait)  # what the door gives, likewise
        runner.release()
        await asyncio.gather(*busy, waiting)


class OneCoreRunner(RecordingRunner):
    """Batches that share one core: each takes `delay` of it, so two at once take twice as long (as torch's
    batches do when they split the threads a lone batch has to itself)."""

    def __init__(self, *, delay: float) -> None:
        super().__init__()
        self.core_seconds = delay
        self._core = threading.Lock()

    def __call__(self, payloads: list[tuple[Any, int]]) -> list[tuple[str, Any]]:
        results = super().__call__(payloads)
        with self._core:
            time.sleep(self.core_seconds)
        return results


async def test_two_workers_that_share_the_cpu_are_expected_to_clear_the_queue_at_the_rate_they_show() -> None:
    # Two 1000-token batches at once take ~0.2 s between them: ~10,000 tokens a second however many workers run
    # them, so 30,000 queued tokens take ~3 s (counting each batch's own speed twice over would say ~1.5 s).
    runner = OneCoreRunner(delay=0.1)
    config = dict(workers=2, max_batch_size=10, max_queue_tokens=30_000, max_batch_tokens=100_000)
    async with running(runner, **config) as batcher:
        await asyncio.gather(*(submit(batcher, *[(f"{r}-{i}", 100) for i in range(10)]) for r in range(4)))
        assert len(runner.batches) == 4
        busy = await both_workers_held(batcher, runner)
        waiting = await queued(batcher, ("big", 29_999))
        wait = batcher.expected_wait()
        assert wait is not None and 2.4 < wait < 4
        runner.release()
        await asyncio.gather(*busy, waiting)


async def measured_at(batcher: Batcher, runner: RecordingRunner, clock: FakeClock, rate: float) -> None:
    """One batch of 100 tokens that takes 100 / `rate` seconds on the fake clock: the batcher's measured throughput
    is then `rate` tokens a second (time on the batcher's clock is what it measures)."""
    runner.hold()
    batches = len(runner.batches)
    task = spawn(submit(batcher, ("measured", 100)))
    await until(lambda: len(runner.batches) > batches)
    clock.now += 100 / rate
    runner.release()
    await task
    assert batcher.tokens_per_second == pytest.approx(rate)


async def test_a_request_is_admitted_while_the_work_ahead_and_its_own_fill_at_most_the_deadline_share() -> None:
    clock, runner = FakeClock(), RecordingRunner()
    async with running(runner, clock=clock, max_batch_size=1, max_wait_ms=0) as batcher:
        await measured_at(batcher, runner, clock, rate=100.0)
        first = await first_batch_running(batcher, runner)  # held: no time passes on the fake clock
        ahead = await queued(batcher, ("ahead", 100))
        # 100 tokens ahead and a 50-token request's own: 1.5 s at 100 tokens a second, DEADLINE_SHARE of 1.5 / share.
        limit = 1.5 / DEADLINE_SHARE
        late = await refused(batcher.submit([("late", 50)], [50], within=limit * 0.95))
        assert isinstance(late, QueueFull), "inside its deadline, but past the share an estimate may be trusted with"
        assert late.retry_after >= 1
        own = await refused(batcher.submit([("big", 5000)], [5000], within=limit))
        assert isinstance(own, QueueFull), "its own work counts: little ahead, but too much to do itself"
        in_time = spawn(batcher.submit([("in-time", 50)], [50], within=limit * 1.05))
        await until(lambda: batcher.queued_items == 2)
        runner.release()
        assert await asyncio.gather(first, ahead, in_time) == [outputs("first"), outputs("ahead"), outputs("in-time")]
        alone = await batcher.submit([("alone", 5000)], [5000], within=1e-9)  # nothing ahead: refusing cannot help
        assert alone == outputs("alone")
    assert "late" not in runner.seen and "big" not in runner.seen


async def test_queued_requests_that_can_no_longer_finish_in_time_are_refused_before_any_work_is_spent_on_them() -> None:
    # Admitted at the rate measured as they arrived; then a batch holds the model for long: at the rate measured
    # once it ends, the requests at the back cannot finish before their deadlines, and get a 429 at once rather
    # than a 504 when the deadline passes.
    clock, runner = FakeClock(), RecordingRunner()
    async with running(runner, clock=clock, max_batch_size=1, max_wait_ms=0) as batcher:
        await measured_at(batcher, runner, clock, rate=100.0)  # 1 s for each 100-token request below
        first = await first_batch_running(batcher, runner)
        front = spawn(batcher.submit([("front", 100)], [100], within=4.0))
        patient = spawn(batcher.submit([("patient", 100)], [100]))  # no deadline: never refused, but it is ahead
        back = spawn(batcher.submit([("back", 100)], [100], within=4.0))
        bulk = spawn(batcher.submit([("bulk", 100)], [100], within=30.0, priority="bulk"))
        await until(lambda: batcher.queued_items == 4)
        clock.now += 1.0  # "first" held the model for 1 s: with the earlier batch, 81 tokens in 1.8 s (decayed)
        runner.release()
        # At 45 tokens a second "front" ends ~2.2 s from now, in time for its 3 s left; "patient" at ~4.4 s; "back"
        # at ~6.7 s, past its deadline: refused. Bulk waits behind the others, at ~6.7 s, in time for its 29 s left.
        error = (await asyncio.gather(back, return_exceptions=True))[0]
        assert isinstance(error, QueueFull) and error.retry_after >= 1
        assert batcher.shed == 1
        assert await asyncio.gather(first, front, patient, bulk) == [
            outputs("first"),
            outputs("front"),
            outputs("patient"),
            outputs("bulk"),
        ]
        assert (batcher.queued_items, batcher.queued_tokens) == (0, 0)
    assert "back" not in runner.seen


async def test_before_any_batch_is_measured_a_request_with_a_deadline_waits_behind_two_rounds_of_batches_at_most() -> (
    None
):
    runner = RecordingRunner()
    async with running(runner, max_batch_tokens=100, max_batch_size=1) as batcher:
        first = await first_batch_running(batcher, runner)  # running, not yet measured
        ahead = await queued(batcher, ("a", 100), ("b", 100))
        assert batcher.expected_wait() is None
        admitted = spawn(batcher.submit([("c", 50)], [50], within=30.0))  # 200 tokens ahead: two rounds, admitted
        await until(lambda: batcher.queued_tokens == 250)
        late = await refused(batcher.submit([("d", 1)], [1], within=30.0))  # 250 ahead: refused, come back in 1 s
        assert isinstance(late, QueueFull) and late.retry_after == 1.0
        assert batcher.full(within=30.0) == 1.0
        no_deadline = spawn(batcher.submit([("e", 1)], [1]))  # nothing to meet: queued
        await until(lambda: batcher.queued_tokens == 251)
        runner.release()
        await asyncio.gather(first, ahead, admitted, no_deadline)
        assert batcher.expected_wait() == 0  # measured now: the deadline is judged by the measured rate
        assert await batcher.submit([("f", 1)], [1], within=30.0) == outputs("f")
    assert "d" not in runner.seen


# -- edge cases ------------------------------------------------------------------------------


async def test_an_empty_request_returns_no_results() -> None:
    runner = RecordingRunner()
    async with running(runner) as batcher:
        empty = spawn(batcher.submit([], []))
        await settle()
        assert empty.done() and empty.result() == []
    assert runner.batches == []


async def test_an_item_costing_nothing_counts_as_one_token_and_the_queue_accounting_returns_to_zero() -> None:
    runner = RecordingRunner()
    observer = RecordingObserver()
    async with running(runner, observer) as batcher:
        first = await first_batch_running(batcher, runner)
        free = await queued(batcher, ("free", 0))
        assert batcher.queued_tokens == 1
        runner.release()
        assert await free == outputs("free")
        await first
        assert (batcher.queued_items, batcher.queued_tokens) == (0, 0)
    assert all(tokens >= 0 for _, tokens in observer.queue)


# -- refusing what would meet its deadline in the queue ----------------------------------------


async def test_a_request_is_refused_when_the_work_queued_ahead_would_outlast_its_deadline() -> None:
    clock, runner = FakeClock(), RecordingRunner()
    async with running(runner, clock=clock, max_batch_size=1, max_wait_ms=0) as batcher:
        assert batcher.expected_wait() is None  # nothing measured yet: no estimate, no refusal by it
        await measured_at(batcher, runner, clock, rate=100.0)
        assert batcher.expected_wait() == 0
        first = await first_batch_running(batcher, runner)
        ahead = await queued(batcher, ("ahead", 100))
        assert batcher.expected_wait() == pytest.approx(1.0)
        late = await refused(batcher.submit([("late", 1)], [1], within=0.5))
        assert isinstance(late, QueueFull) and late.retry_after >= 1
        assert batcher.full(within=0.5) is not None and batcher.full(within=2.0) is None
        in_time = spawn(batcher.submit([("in-time", 1)], [1], within=2.0))
        await until(lambda: batcher.queued_items == 2)  # accepted: it queues behind "ahead"
        runner.release()
        assert await in_time == outputs("in-time")
        await ahead
        await first
    assert "late" not in runner.seen
