"""Which endpoint takes the next call: balancing, passive ejection and re-admission (pure logic, no I/O)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from embedserve.server.serving.upstream.config import Balance, EndpointSpec


@dataclass(slots=True)
class Endpoint:
    url: str
    weight: int = 1
    healthy: bool = True
    outstanding: int = 0
    failures: int = 0
    """Consecutive failed calls or health checks."""
    ejected_at: float | None = None
    ejections: int = 0
    _current: int = 0  # smooth weighted round robin's running weight

    def snapshot(self) -> dict[str, object]:
        return {
            "url": self.url,
            "weight": self.weight,
            "healthy": self.healthy,
            "outstanding": self.outstanding,
            "consecutive_failures": self.failures,
            "ejections": self.ejections,
        }


class Balancer:
    """Picks endpoints by strategy among the healthy ones.

    An endpoint is ejected after `eject_after` consecutive failures. It comes back when an active health
    check passes or, with `readmit_after` set (no active checks), on probation once it has rested that long:
    one success re-admits it, one failure ejects it again. When every endpoint is ejected, all are tried
    anyway (a fleet marked down by mistake must be able to recover through traffic).
    """

    def __init__(
        self,
        endpoints: Iterable[EndpointSpec],
        strategy: Balance = "round_robin",
        *,
        eject_after: int = 3,
        readmit_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[Endpoint], None] | None = None,
    ) -> None:
        self.endpoints: list[Endpoint] = [Endpoint(e.url, e.weight) for e in endpoints]
        self.strategy = strategy
        self.eject_after = eject_after
        self.readmit_after = readmit_after
        self.clock = clock
        self.on_change = on_change or (lambda endpoint: None)
        self._next = 0

    # -- membership ------------------------------------------------------------------------

    def find(self, url: str) -> Endpoint | None:
        url = url.rstrip("/")
        return next((e for e in self.endpoints if e.url == url), None)

    def add(self, spec: EndpointSpec) -> Endpoint:
        if self.find(spec.url) is not None:
            raise ValueError(f"endpoint {spec.url} is already listed")
        endpoint = Endpoint(spec.url, spec.weight)
        self.endpoints.append(endpoint)
        return endpoint

    def remove(self, url: str) -> Endpoint:
        endpoint = self.find(url)
        if endpoint is None:
            raise KeyError(url)
        self.endpoints.remove(endpoint)
        return endpoint

    # -- choosing --------------------------------------------------------------------------

    def _usable(self, endpoint: Endpoint, now: float) -> bool:
        if endpoint.healthy:
            return True
        return (
            self.readmit_after is not None
            and endpoint.ejected_at is not None
            and now - endpoint.ejected_at >= self.readmit_after
        )

    def pick(self, exclude: Iterable[str] = ()) -> Endpoint | None:
        """The endpoint for the next call, not one of `exclude` (those already tried); None if none is left."""
        excluded = set(exclude)
        now = self.clock()
        left = [e for e in self.endpoints if e.url not in excluded]
        candidates = [e for e in left if self._usable(e, now)] or left
        if not candidates:
            return None
        if self.strategy == "weighted":
            return self._smooth_weighted(candidates)
        if self.strategy == "least_outstanding":
            least = min(e.outstanding / e.weight for e in candidates)
            candidates = [e for e in candidates if e.outstanding / e.weight == least]
        return self._round_robin(candidates)

    def _round_robin(self, candidates: list[Endpoint]) -> Endpoint:
        """The first candidate at or after the cursor, in the endpoints' own order."""
        order = {id(e): i for i, e in enumerate(self.endpoints)}
        count = len(self.endpoints)
        chosen = min(candidates, key=lambda e: (order[id(e)] - self._next) % count)
        self._next = (order[id(chosen)] + 1) % count
        return chosen

    @staticmethod
    def _smooth_weighted(candidates: list[Endpoint]) -> Endpoint:
        """nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, not a a a a a b c."""
        total = 0
        for e in candidates:
            e._current += e.weight
            total += e.weight
        chosen = max(candidates, key=lambda e: e._current)
        chosen._current -= total
        return chosen

    # -- outcomes --------------------------------------------------------------------------

    def succeeded(self, endpoint: Endpoint) -> None:
        endpoint.failures = 0
        if not endpoint.healthy:
            self._readmit(endpoint)

    def failed(self, endpoint: Endpoint) -> None:
        endpoint.failures += 1
        probation = not endpoint.healthy and endpoint.ejected_at is not None
        if endpoint.healthy and endpoint.failures >= self.eject_after:
            endpoint.healthy = False
            endpoint.ejections += 1
            endpoint.ejected_at = self.clock()
            self.on_change(endpoint)
        elif probation:  # failed again after its rest: another rest
            endpoint.ejected_at = self.clock()

    def _readmit(self, endpoint: Endpoint) -> None:
        endpoint.healthy = True
        endpoint.ejected_at = None
        endpoint.failures = 0
        self.on_change(endpoint)
