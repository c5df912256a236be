"""The micro-batcher: requests queue their items and await results; workers run batches.

One scheduler task per batcher forms a batch whenever a worker is free, waiting up to
`max_wait_ms` for a fuller batch unless one is ready. Batches run in worker threads, so the
event loop keeps parsing, tokenizing and answering while a batch runs. No polling: every wait
is on a future that a submit, a finished batch or a deadline resolves.

Work comes in two priority classes, each queued apart: interactive (the default: a query, latency-bound) and bulk
(ingestion, throughput-bound). A free worker takes interactive work first, so an interactive item waits behind at most
the bulk batches already running; while both wait, bulk still gets `bulk_share` of the model's work (counted in the
seconds its batches run, never two bulk batches in a row), so a steady stream of queries cannot stop ingestion.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from embedserve.batching.clock import Clock, LoopClock
from embedserve.batching.config import BatchingConfig
from embedserve.batching.errors import BatchFailed, QueueFull, RequestTooLarge, ShuttingDown
from embedserve.batching.forming import grow_batch

P = TypeVar("P")
R = TypeVar("R")

log = logging.getLogger("embedserve.batching")

UNMEASURED_ROUNDS = 2
"""Before any batch has finished, the rate is unknown: a request with a deadline is then refused (Retry-After 1 s)
once more than this many rounds of batches (workers x max_batch_tokens each) already wait ahead of it. Without a
bound, a cold server's first burst was admitted whole: torch on long texts took ~50 s of work against a 30 s
deadline, and most of it ended in 504s after the work was spent. The first batch's measurement lifts the bound."""

DEADLINE_SHARE = 0.8
"""The share of a request's deadline that the work queued ahead of it, and its own, may fill at the measured rate.
The rate is an estimate (the probe's at first, then recent batches', whose texts may be shorter), and a request
admitted on too high a one ends in a 504 with its work spent: torch on long texts, admitted to the whole 30 s by the
probe's rate, still ended its first burst in 23 504s, 8 with this share, none once `_shed` was added too (one run
each, AMD EPYC VNNI). Under overload the model is busy either way, so a shorter queue costs no throughput, only
latency, and it saves the tail."""

RATE_DECAY = 0.8
"""How much of the measured throughput each finished batch keeps: the last ~5 batches weigh most."""

Priority = Literal["interactive", "bulk"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "bulk")
"""The priority classes, in the order a free worker serves them."""


class BatchObserver(Protocol):
    """Hooks for metrics; called on the event loop."""

    def on_queue(self, items: int, tokens: int) -> None: ...

    def on_batch(
        self, size: int, tokens: int, padded_tokens: int, queue_seconds: float, run_seconds: float
    ) -> None: ...


@dataclass(slots=True)
class BatchRun:
    started: float
    finished: float
    size: int
    tokens: int


@dataclass(slots=True)
class Timeline:
    """What happened to one request, on the batcher's clock (for traces): when it was queued, when its
    first batch started, and each batch its items ran in."""

    queued: float = 0.0
    started: float | None = None
    batches: list[BatchRun] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Request:
    future: asyncio.Future[list[Any]]
    results: list[Any]
    remaining: int
    items: list[_Item] = field(default_factory=list)
    timeline: Timeline | None = None
    deadline: float | None = None
    """On the batcher's clock: when its caller gives up (`within` after it was queued); None: never."""
    queued_tokens: int = 0
    """Of its items, the tokens still waiting."""
    started: bool = False


@dataclass(slots=True, eq=False)
class _Item:
    cost: int
    seq: int
    payload: Any
    request: _Request
    index: int
    enqueued: float
    queue: _Queue
    queued: bool = True


def _sort_key(item: _Item) -> tuple[int, int]:
    return item.cost, item.seq


@dataclass(slots=True, eq=False)
class _Queue:
    """One priority class's waiting items."""

    sorted: list[_Item] = field(default_factory=list)
    """By (length, arrival): a batch is a window of it, or of its oldest items (`Batcher._window`) behind a backlog."""
    arrivals: deque[_Item] = field(default_factory=deque)
    """By arrival; taken ones are skipped lazily."""
    requests: deque[_Request] = field(default_factory=deque)
    """With items waiting, by arrival (`Batcher._shed`); ones with none left are skipped lazily."""
    tokens: int = 0

    def oldest(self) -> _Item:
        while not self.arrivals[0].queued:
            self.arrivals.popleft()
        return self.arrivals[0]

    def has_room(self, items: int, tokens: float, config: BatchingConfig) -> bool:
        return len(self.sorted) + items <= config.max_queue_items and self.tokens + tokens <= config.max_queue_tokens


class Batcher(Generic[P, R]):
    """Batches payloads of one model. `run_batch(payloads) -> results` runs in a worker thread."""

    def __init__(
        self,
        run_batch: Callable[[list[P]], Sequence[R]],
        config: BatchingConfig,
        *,
        name: str = "model",
        observer: BatchObserver | None = None,
        clock: Clock | None = None,
        padded: bool = True,
    ) -> None:
        self._run_batch = run_batch
        self.padded = padded
        """Whether `run_batch` computes on padding: batches are then budgeted by longest item x items,
        else by the items' own lengths (a runner that computes on real tokens only). Every built-in runner
        is budgeted as padded, the packed torch forward included (models.torch_loading says why)."""
        self._clock = clock or LoopClock()
        self.config = config
        self.name = name
        self._observer = observer
        self._queues: dict[Priority, _Queue] = {priority: _Queue() for priority in PRIORITIES}
        self._bulk_credit = 0.0  # run seconds bulk has earned while queries ran and it waited, less what it spent
        self._last_was_bulk = False
        self._seq = itertools.count()
        self._in_flight = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._idle: asyncio.Event | None = None
        self._free_workers: asyncio.Semaphore | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closing = False
        # Throughput as tokens finished over the wall-clock seconds some batch was running, both decayed per finished
        # batch: the workers together, whether batches overlap or run alone (a lone torch batch takes every thread).
        self._done_tokens = 0.0
        self._busy_seconds = 0.0
        self._busy_mark = 0.0  # when (on its clock) the batcher last became busy or a batch last finished
        self._request_items = 1.0  # smoothed size of the requests submitted, for full()
        self._request_tokens = 1.0
        self._arrival_gap = 0.0  # smoothed seconds between requests: whether waiting for company pays
        self._last_arrival: float | None = None
        self.shed = 0
        """Requests refused after they were queued, as they could no longer finish in time (`_shed`)."""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix=f"batch-{self.name}")
        self._free_workers = asyncio.Semaphore(self.config.workers)
        self._idle = asyncio.Event()
        self._idle.set()
        self._scheduler = asyncio.create_task(self._schedule(), name=f"batcher-{self.name}")

    async def close(self, *, drain: bool = True) -> None:
        """Stops taking work; with `drain`, first finishes everything queued and running."""
        self._closing = True
        if not drain:
            for queue in self._queues.values():
                for item in list(queue.sorted):
                    self._fail(item.request, ShuttingDown())
        self._wake()
        if self._idle is not None:
            await self._idle.wait()
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch running."""
        return self._next_queue() is None and self._in_flight == 0

    @property
    def queued_items(self) -> int:
        return sum(len(queue.sorted) for queue in self._queues.values())

    @property
    def queued_tokens(self) -> int:
        return sum(queue.tokens for queue in self._queues.values())

    def _tokens_ahead(self, priority: Priority) -> int:
        """The queued tokens a new item of `priority` waits behind: its own class's and every class served before
        it."""
        ahead = PRIORITIES[: PRIORITIES.index(priority) + 1]
        return sum(self._queues[p].tokens for p in ahead)

    @property
    def tokens_per_second(self) -> float | None:
        """The measured throughput of all workers together: tokens finished per second that any batch was running
        (recent batches weigh most); None before a batch has finished."""
        if self._busy_seconds <= 0:
            return None
        return self._done_tokens / self._busy_seconds

    @property
    def measured(self) -> tuple[float, float] | None:
        """The (tokens, busy seconds) that `tokens_per_second` is the ratio of, decayed; None before a measurement.
        What a batcher of the same model, started later, is `seed`ed with."""
        return (self._done_tokens, self._busy_seconds) if self._busy_seconds > 0 else None

    def seed(self, tokens: float, seconds: float) -> None:
        """Counts a measurement taken before serving (models.probe: one batch, run alone) as if a batch had
        finished: the first requests' deadlines are then judged by a rate instead of UNMEASURED_ROUNDS."""
        if tokens > 0 and seconds > 0:
            self._done_tokens = RATE_DECAY * self._done_tokens + tokens
            self._busy_seconds = RATE_DECAY * self._busy_seconds + seconds

    def expected_wait(self, priority: Priority = "bulk") -> float | None:
        """Seconds the work queued ahead of a new item of `priority` takes at the measured throughput (by default
        all queued work); None before any batch has been measured."""
        rate = self.tokens_per_second
        return None if rate is None else self._tokens_ahead(priority) / rate

    def full(self, within: float | None = None, priority: Priority = "interactive") -> float | None:
        """Whether a request of the usual size (the recent requests' average) and `priority` would be refused
        now: its class's queue has no room for it, or it would not finish within `within` seconds
        (`_too_slow_for`). The Retry-After to give, or None."""
        if not self._queues[priority].has_room(self._request_items, self._request_tokens, self.config):
            return self._retry_after()
        return self._too_slow_for(within, priority, self._request_tokens) if within is not None else None

    def _too_slow_for(self, within: float, priority: Priority, tokens: float) -> float | None:
        """The Retry-After for a request of `tokens` when work is queued ahead of it and that work and its own fill
        more than DEADLINE_SHARE of `within` seconds at the measured rate; None when it fits, or nothing waits
        ahead (refusing could not make it sooner). Before any batch has been measured: when more than
        UNMEASURED_ROUNDS rounds of batches wait ahead."""
        ahead = self._tokens_ahead(priority)
        rate = self.tokens_per_second
        if ahead == 0:
            return None
        if rate is None:
            return 1.0 if ahead > UNMEASURED_ROUNDS * self.config.workers * self.config.max_batch_tokens else None
        over = (ahead + tokens) / rate - within * DEADLINE_SHARE
        return max(1.0, over) if over > 0 else None

    # -- submitting ------------------------------------------------------------------------

    async def submit(
        self,
        payloads: Sequence[P],
        costs: Sequence[int],
        *,
        within: float | None = None,
        timeline: Timeline | None = None,
        priority: Priority = "interactive",
    ) -> list[R]:
        """Queues one request's items in its `priority` class and returns their results in input order.

        Raises QueueFull (its class's queue bound is reached, or the work queued ahead and its own would fill more
        than DEADLINE_SHARE of `within` seconds at the measured rate: it would likely meet its deadline waiting),
        RequestTooLarge, ShuttingDown or BatchFailed. Cancelling the caller drops the request's items that have not
        started. A `timeline` is filled in as the request is queued and run.
        """
        if self._closing or self._scheduler is None:
            raise ShuttingDown()
        if not payloads:
            return []
        costs = [max(1, cost) for cost in costs]  # an item always occupies a position in its batch
        count, tokens = len(payloads), sum(costs)
        self._request_items = 0.9 * self._request_items + 0.1 * count
        self._request_tokens = 0.9 * self._request_tokens + 0.1 * tokens
        if count > self.config.max_queue_items:
            raise RequestTooLarge("items", count, self.config.max_queue_items)
        if tokens > self.config.max_queue_tokens:
            raise RequestTooLarge("tokens", tokens, self.config.max_queue_tokens)
        queue = self._queues[priority]
        if not queue.has_room(count, tokens, self.config):
            raise QueueFull(self._retry_after())
        if within is not None and (retry := self._too_slow_for(within, priority, tokens)) is not None:
            raise QueueFull(retry)

        loop = asyncio.get_running_loop()
        request = _Request(loop.create_future(), [None] * count, count, timeline=timeline, queued_tokens=tokens)
        now = self._clock.time()
        if within is not None:
            request.deadline = now + within
        queue.requests.append(request)
        if self._last_arrival is not None:
            self._arrival_gap = 0.8 * self._arrival_gap + 0.2 * (now - self._last_arrival)
        self._last_arrival = now
        if timeline is not None:
            timeline.queued = now
        for index, (payload, cost) in enumerate(zip(payloads, costs)):
            item = _Item(cost, next(self._seq), payload, request, index, now, queue)
            request.items.append(item)
            bisect.insort(queue.sorted, item, key=_sort_key)
            queue.arrivals.append(item)
        queue.tokens += tokens
        self._idle.clear()  # type: ignore[union-attr]
        self._notify_queue()
        self._wake()
        try:
            return await request.future
        except asyncio.CancelledError:
            self._drop(request)
            raise
        finally:
            # Its items point back at it: left linked, every request would be a reference cycle that only the
            # garbage collector frees, with the futures, payloads and results hanging off it.
            request.items.clear()

    # -- scheduling ------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _wait_for_wakeup(self, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._wakeup = loop.create_future()
        timer = self._clock.call_at(deadline, self._wake) if deadline is not None else None
        try:
            await self._wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    def _next_queue(self) -> _Queue | None:
        """The class the next batch comes from: interactive work when any waits, except that while both classes
        wait, bulk takes a batch once it has earned one (`_account`), never twice in a row; bulk alone when only it
        waits."""
        interactive, bulk = self._queues["interactive"], self._queues["bulk"]
        if not interactive.sorted:
            return bulk if bulk.sorted else None
        if bulk.sorted and self._bulk_credit > 0 and not self._last_was_bulk:
            return bulk
        return interactive

    def _contended(self, queue: _Queue) -> bool:
        """Whether the other class has work waiting as a batch of `queue` is taken."""
        return any(other.sorted for other in self._queues.values() if other is not queue)

    def _account(self, queue: _Queue, contended: bool, seconds: float) -> None:
        """Bulk's credit, in run seconds, once a batch taken while the other class waited (`contended`) has run: an
        interactive one earns bulk `bulk_share / (1 - bulk_share)` of its seconds, a bulk one spends its own. So
        while both wait, bulk's share of the model's time tends to `bulk_share`. A bulk batch taken while no query
        waited used time queries left: it neither earns nor spends."""
        share = self.config.bulk_share
        if not self._queues["bulk"].sorted and queue is self._queues["interactive"]:
            self._bulk_credit = 0.0  # nothing of bulk waits: it is owed nothing, and owes nothing more
        elif contended and queue is self._queues["interactive"] and share > 0:
            self._bulk_credit += seconds * share / (1 - share)
        elif contended and queue is self._queues["bulk"]:
            self._bulk_credit -= seconds

    def _batch_ready(self, queue: _Queue) -> bool:
        """Whether waiting longer cannot make the next batch bigger: the queue already fills the item
        budget, or the padded-token budget (everything waiting, padded to the longest)."""
        count = len(queue.sorted)
        return count >= self.config.max_batch_size or queue.sorted[-1].cost * count >= self.config.max_batch_tokens

    async def _schedule(self) -> None:
        max_wait = self.config.max_wait_ms / 1000
        assert self._free_workers is not None
        while True:
            await self._free_workers.acquire()
            while (queue := self._next_queue()) is None:
                self._update_idle()
                await self._wait_for_wakeup(None)
            # An idle worker waits up to max_wait for a fuller batch, unless requests have lately come
            # further apart than that: a lone client's request would only wait for nobody. Work of a class
            # served earlier that arrives meanwhile takes the batch.
            if max_wait > 0 and self._arrival_gap < max_wait:
                deadline = queue.oldest().enqueued + max_wait
                while not self._batch_ready(queue) and not self._closing and self._clock.time() < deadline:
                    await self._wait_for_wakeup(deadline)
                    if (queue := self._next_queue()) is None:  # everything waiting was cancelled meanwhile
                        break
                if queue is None:
                    self._free_workers.release()
                    continue
            contended = self._contended(queue)
            self._last_was_bulk = queue is self._queues["bulk"]
            self._dispatch(self._take_batch(queue), queue, contended)

    def _window(self, queue: _Queue) -> list[_Item] | None:
        """The oldest waiting items, `arrival_window` batches' worth (by items and by tokens), in arrival order: what
        the next batch is formed from. None when that is the whole queue (or the window is off)."""
        config = self.config
        max_items = config.arrival_window * config.max_batch_size
        max_tokens = config.arrival_window * config.max_batch_tokens
        if not config.arrival_window or (len(queue.sorted) <= max_items and queue.tokens <= max_tokens):
            return None
        window: list[_Item] = []
        tokens = 0
        for item in queue.arrivals:
            if item.queued:
                window.append(item)
                tokens += item.cost
                if len(window) >= max_items or tokens >= max_tokens:
                    break
        return window

    def _take_batch(self, queue: _Queue) -> list[_Item]:
        oldest = queue.oldest()
        window = self._window(queue)
        candidates = queue.sorted if window is None else sorted(window, key=_sort_key)
        anchor = bisect.bisect_left(candidates, _sort_key(oldest), key=_sort_key)
        lo, hi = grow_batch([item.cost for item in candidates], anchor, self.config, padded=self.padded)
        batch = candidates[lo:hi]
        if window is None:
            del queue.sorted[lo:hi]
        else:
            for item in batch:
                del queue.sorted[bisect.bisect_left(queue.sorted, _sort_key(item), key=_sort_key)]
        for item in batch:
            item.queued = False
            queue.tokens -= item.cost
            item.request.queued_tokens -= item.cost
            item.request.started = True
        self._notify_queue()
        return batch

    def _dispatch(self, batch: list[_Item], queue: _Queue, contended: bool) -> None:
        loop = asyncio.get_running_loop()
        started = self._clock.time()
        if self._in_flight == 0:
            self._busy_mark = started
        self._in_flight += 1
        waited = started - min(item.enqueued for item in batch)
        for item in batch:
            timeline = item.request.timeline
            if timeline is not None and timeline.started is None:
                timeline.started = started
        payloads = [item.payload for item in batch]
        future = loop.run_in_executor(self._pool, self._timed_run, payloads)
        future.add_done_callback(lambda done: self._complete(batch, done, waited, started, queue, contended))

    def _timed_run(self, payloads: list[P]) -> tuple[Sequence[R], float]:
        started = time.perf_counter()
        results = self._run_batch(payloads)
        return results, time.perf_counter() - started

    def _complete(
        self,
        batch: list[_Item],
        done: asyncio.Future[Any],
        waited: float,
        started: float,
        queue: _Queue,
        contended: bool,
    ) -> None:
        self._in_flight -= 1
        now = self._clock.time()
        busy, self._busy_mark = now - self._busy_mark, now
        run = BatchRun(started, now, len(batch), sum(item.cost for item in batch))
        for request in {id(item.request): item.request for item in batch}.values():
            if request.timeline is not None:
                request.timeline.batches.append(run)
        self._free_workers.release()  # type: ignore[union-attr]
        error = done.exception()
        if error is not None:
            log.error("batch failed", extra={"model": self.name, "size": len(batch), "error": repr(error)})
            for request in {id(item.request): item.request for item in batch}.values():
                self._fail(request, BatchFailed(error))
        else:
            results, seconds = done.result()
            if len(results) != len(batch):
                for request in {id(item.request): item.request for item in batch}.values():
                    self._fail(request, BatchFailed(RuntimeError("runner returned a wrong number of results")))
            else:
                for item, result in zip(batch, results):
                    request = item.request
                    request.results[item.index] = result
                    request.remaining -= 1
                    if request.remaining == 0 and not request.future.done():
                        request.future.set_result(request.results)
                self._observe(batch, waited, seconds, busy)
                self._account(queue, contended, seconds)
                self._shed()
        self._update_idle()

    def _observe(self, batch: list[_Item], waited: float, seconds: float, busy: float) -> None:
        """Counts a finished batch into the throughput: its tokens, and the `busy` seconds since the batcher became
        busy or another batch finished (so overlapping batches are not counted twice)."""
        tokens = sum(item.cost for item in batch)
        self._done_tokens = RATE_DECAY * self._done_tokens + tokens
        self._busy_seconds = RATE_DECAY * self._busy_seconds + busy
        if self._observer is not None:
            padded = max(item.cost for item in batch) * len(batch)
            self._observer.on_batch(len(batch), tokens, padded, waited, seconds)

    # -- dropping --------------------------------------------------------------------------

    def _shed(self) -> None:
        """Refuses (QueueFull) each waiting request that has not started and, at the rate just measured, would
        not finish before its deadline: its caller would get a 504 after the model had spent work on it, so it
        gets a 429 now and the model keeps its time for requests that can still make it. Admission judges by the
        rate at arrival; this catches what it let in on a rate that then fell (a cold start's probe, a neighbour
        taking the CPU). Requests are taken to finish in arrival order, as the arrival window serves them."""
        rate = self.tokens_per_second
        if rate is None:
            return
        now = self._clock.time()
        ahead = 0
        for priority in PRIORITIES:
            queue = self._queues[priority]
            kept: deque[_Request] = deque()
            for request in queue.requests:
                if request.queued_tokens <= 0 or request.future.done():
                    continue
                ahead += request.queued_tokens
                late = now + ahead / rate - request.deadline if request.deadline is not None else 0.0
                if late > 0 and not request.started:
                    ahead -= request.queued_tokens
                    self._fail(request, QueueFull(max(1.0, late)))
                    self.shed += 1
                else:
                    kept.append(request)
            queue.requests = kept

    def _drop(self, request: _Request) -> None:
        """Removes a request's still-queued items (its caller went away or it failed)."""
        removed = False
        for item in request.items:
            if item.queued:
                item.queued = False
                queue = item.queue
                index = bisect.bisect_left(queue.sorted, _sort_key(item), key=_sort_key)
                del queue.sorted[index]
                queue.tokens -= item.cost
                request.queued_tokens -= item.cost
                removed = True
        if removed:
            self._notify_queue()
            self._update_idle()

    def _fail(self, request: _Request, error: BaseException) -> None:
        self._drop(request)
        if not request.future.done():
            request.future.set_exception(error)

    def _update_idle(self) -> None:
        if self._idle is not None and not self._next_queue() and self._in_flight == 0:
            self._idle.set()

    def _notify_queue(self) -> None:
        if self._observer is not None:
            self._observer.on_queue(self.queued_items, self.queued_tokens)

    def _retry_after(self) -> float:
        """For a full queue: how long the work queued now takes (`expected_wait`), at least 1 s; 1 s before any
        batch has been measured."""
        wait = self.expected_wait()
        return 1.0 if wait is None else max(1.0, wait)
