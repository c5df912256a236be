"""Inference routes declare themselves: `@inference(...)` beside a route's definition says which kinds of
model it queues work for, and on which of their batchers.

The app reads the declarations when it is built (`inference_routes`): each declared POST route is
refused at the overload door when those batchers are saturated (server/http/admission.py), and is served by
a FastRoute in front of its FastAPI route (server/http/fast_routes.py). A route that queues no model work
declares nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.routing import APIRoute, APIRouter

from embedserve.models.spec import ModelKind
from embedserve.server.serving.local_model import BatcherRole

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Inference:
    """Where an inference route may queue: on the `batcher` of models of `kinds`."""

    kinds: frozenset[ModelKind]
    batcher: BatcherRole = "main"


_DECLARED: dict[Callable[..., Any], Inference] = {}


def inference(*kinds: ModelKind, batcher: BatcherRole = "main") -> Callable[[Endpoint], Endpoint]:
    """Declares an endpoint an inference route queueing on models of `kinds` (several where its body
    decides, as TEI's base route's does), on their `batcher`."""
    if not kinds:
        raise TypeError("an inference route queues on at least one kind of model")

    def declare(endpoint: Endpoint) -> Endpoint:
        _DECLARED[endpoint] = Inference(frozenset(kinds), batcher)
        return endpoint

    return declare


def inference_routes(routers: Iterable[APIRouter]) -> dict[str, Inference]:
    """The declared POST routes of `routers`, by path (prefix included)."""
    return {
        route.path: _DECLARED[route.endpoint]
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and "POST" in route.methods and route.endpoint in _DECLARED
    }
