"""Which endpoint takes the next call: strategies, passive ejection, re-admission."""

from __future__ import annotations

from collections import Counter

from embedserve.server.serving.upstream.balancer import Balancer
from embedserve.server.serving.upstream.config import EndpointSpec
from tests.support import FakeClock


def endpoints(*weights: int) -> list[EndpointSpec]:
    return [EndpointSpec(url=f"http://127.0.0.{i}:80", weight=w) for i, w in enumerate(weights, start=1)]


def picks(balancer: Balancer, n: int) -> list[str]:
    return [balancer.pick().url[-6:-3] for _ in range(n)]


def test_round_robin_takes_turns_in_the_listed_order() -> None:
    balancer = Balancer(endpoints(1, 1, 1))
    assert picks(balancer, 6) == ["0.1", "0.2", "0.3", "0.1", "0.2", "0.3"]


def test_weighted_spreads_each_endpoints_share_smoothly() -> None:
    balancer = Balancer(endpoints(5, 1, 1), "weighted")
    first = picks(balancer, 7)
    assert first == ["0.1", "0.1", "0.2", "0.1", "0.3", "0.1", "0.1"]  # nginx's smooth order, not 5 in a row
    assert Counter(picks(balancer, 700)) == {"0.1": 500, "0.2": 100, "0.3": 100}


def test_least_outstanding_prefers_the_idlest_endpoint_per_weight() -> None:
    balancer = Balancer(endpoints(1, 1, 2), "least_outstanding")
    a, b, c = balancer.endpoints
    a.outstanding, b.outstanding, c.outstanding = 3, 1, 4
    assert balancer.pick() is b  # 1/1 beats 3/1 and 4/2
    b.outstanding = 5
    assert balancer.pick() is c


def test_an_endpoint_is_ejected_after_consecutive_failures_only() -> None:
    balancer = Balancer(endpoints(1, 1), eject_after=3)
    bad, good = balancer.endpoints
    balancer.failed(bad)
    balancer.failed(bad)
    balancer.succeeded(bad)  # a success resets the count
    balancer.failed(bad)
    balancer.failed(bad)
    assert bad.healthy
    balancer.failed(bad)
    assert not bad.healthy and bad.ejections == 1
    assert {balancer.pick().url for _ in range(4)} == {good.url}


def test_a_passing_health_check_readmits_an_ejected_endpoint() -> None:
    changes = []
    balancer = Balancer(endpoints(1, 1), eject_after=1, on_change=lambda e: changes.append((e.url[-6:-3], e.healthy)))
    bad, _ = balancer.endpoints
    balancer.failed(bad)
    balancer.succeeded(bad)
    assert bad.healthy
    assert changes == [("0.1", False), ("0.1", True)]
    assert set(picks(balancer, 2)) == {"0.1", "0.2"}


def test_without_health_checks_an_ejected_endpoint_is_retried_after_its_rest() -> None:
    clock = FakeClock(0.0)
    balancer = Balancer(endpoints(1, 1), eject_after=1, readmit_after=30, clock=clock)
    bad, good = balancer.endpoints
    balancer.failed(bad)
    clock.now = 29
    assert set(picks(balancer, 4)) == {"0.2"}
    clock.now = 30
    assert "0.1" in picks(balancer, 2)  # on probation
    balancer.failed(bad)  # fails again: another full rest
    clock.now = 59
    assert set(picks(balancer, 4)) == {"0.2"}
    clock.now = 60
    balancer.succeeded(bad)
    assert bad.healthy


def test_when_every_endpoint_is_ejected_all_are_still_tried() -> None:
    balancer = Balancer(endpoints(1, 1), eject_after=1)
    for endpoint in balancer.endpoints:
        balancer.failed(endpoint)
    assert set(picks(balancer, 2)) == {"0.1", "0.2"}


def test_retries_skip_the_endpoints_already_tried() -> None:
    balancer = Balancer(endpoints(1, 1, 1))
    first = balancer.pick()
    second = balancer.pick([first.url])
    third = balancer.pick([first.url, second.url])
    assert len({first.url, second.url, third.url}) == 3
    assert balancer.pick([e.url for e in balancer.endpoints]) is None


def test_endpoints_can_be_added_and_removed() -> None:
    balancer = Balancer(endpoints(1))
    balancer.add(EndpointSpec(url="http://127.0.0.9:80/"))
    assert [e.url for e in balancer.endpoints] == ["http://127.0.0.1:80", "http://127.0.0.9:80"]
    balancer.remove("http://127.0.0.1:80")
    assert {balancer.pick().url for _ in range(3)} == {"http://127.0.0.9:80"}
