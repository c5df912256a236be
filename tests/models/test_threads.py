"""Intra-op threads shared among a model's concurrent batches: all for one, a share once they overlap."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import torch

from embedserve.models.threads import CPU_WORKERS, CROWDED_SECONDS, ThreadShare
from tests.support import FakeClock


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_lone_batch_gets_every_thread() -> None:
    share = ThreadShare(4, clock=FakeClock())
    with share.batch() as threads:
        assert threads == 4
        assert torch.get_num_threads() == 4  # set on this thread
    with share.batch() as threads:
        assert threads == 4


def test_overlapping_batches_split_the_threads_and_keep_splitting_while_load_lasts() -> None:
    clock = FakeClock()
    share = ThreadShare(4, clock=clock)
    with share.batch() as first:
        with share.batch() as second:  # a second worker starts meanwhile
            assert (first, second) == (4, 2)
    with share.batch() as alone_but_crowded:  # the next batch under the same load
        assert alone_but_crowded == 2
    clock.now += CROWDED_SECONDS + 0.01  # load gone
    with share.batch() as alone:
        assert alone == 4


def test_every_worker_sets_its_own_team_size() -> None:
    share = ThreadShare(2, clock=FakeClock())
    inside = threading.Barrier(2)
    seen: list[int] = []

    def work() -> None:
        with share.batch():
            inside.wait(timeout=5)  # both batches running at once
            seen.append(torch.get_num_threads())
            inside.wait(timeout=5)

    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)
    assert sorted(seen) in ([1, 2], [1, 1])  # the later one took a share; the first kept its team
    with share.batch() as next_one:
        assert next_one == 1 and torch.get_num_threads() == 1


def test_torch_runs_two_batches_at_once_on_cpu_but_never_more_than_its_threads() -> None:
    assert ThreadShare(16).batches == CPU_WORKERS == 2
    assert ThreadShare(1).batches == 1
