"""Which forward passes of one session run at once: small ones together, a big one alone, and no big one starved."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from embedserve.models.pass_gate import PassGate
from tests.support import until

HANG = 30.0  # seconds: only turns a hang into a failure


def until_gate(condition: Callable[[], bool]) -> None:
    until(condition, "the gate's state the test waits for", HANG, poll=0.001)


def in_thread(gate: PassGate, tokens: int, body: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        with gate.passing(tokens):
            body()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_two_small_passes_run_at_the_same_time() -> None:
    gate = PassGate(small=100)
    both_inside = threading.Barrier(2, timeout=HANG)  # broken, and the test failed, unless both are in at once
    threads = [in_thread(gate, 100, both_inside.wait) for _ in range(2)]  # `small` itself is small
    for thread in threads:
        thread.join(HANG)
    assert not both_inside.broken


@pytest.mark.parametrize("first", [100, 101])
def test_a_big_pass_waits_for_the_running_one_and_then_runs_alone(first: int) -> None:
    gate = PassGate(small=100)
    release, order = threading.Event(), []
    running = in_thread(gate, first, lambda: (order.append("first"), release.wait(HANG)))
    until_gate(lambda: order == ["first"])
    big = in_thread(gate, 101, lambda: order.append("big"))
    until_gate(lambda: gate.waiting == 1)
    assert order == ["first"]  # held at the gate while the other pass runs
    release.set()
    running.join(HANG)
    big.join(HANG)
    assert order == ["first", "big"]


def test_a_small_pass_that_comes_after_a_waiting_big_one_goes_after_it() -> None:
    gate = PassGate(small=100)
    release, order = threading.Event(), []
    running = in_thread(gate, 10, lambda: (order.append("small"), release.wait(HANG)))
    until_gate(lambda: order == ["small"])
    big = in_thread(gate, 500, lambda: order.append("big"))
    until_gate(lambda: gate.waiting == 1)
    late = in_thread(gate, 10, lambda: order.append("late small"))
    until_gate(lambda: gate.waiting == 2)  # it could run beside the first small pass, but the big one waits
    release.set()
    for thread in (running, big, late):
        thread.join(HANG)
    assert order == ["small", "big", "late small"]


def test_beside_busy_neighbours_two_big_passes_run_at_the_same_time() -> None:
    gate = PassGate(small=100, crowded=lambda: True)
    both_inside = threading.Barrier(2, timeout=HANG)
    threads = [in_thread(gate, 500, both_inside.wait) for _ in range(2)]
    for thread in threads:
        thread.join(HANG)
    assert not both_inside.broken
