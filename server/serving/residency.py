"""Which models stay in memory: each model's serving settings (load at start or on demand, unload after
idle seconds), and the server-wide budget's choice of what to unload to make room (least recently used
idle models first).

The policy is here, apart from the host (server.serving.model_host) that acts on it, so that it can be read
and tested without loading anything. These are serving settings, so they live with the models file's
entries, not in `models.spec.ModelSpec`: the model layer knows nothing of when it is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from embedserve.models.errors import ModelError


@dataclass(frozen=True, slots=True)
class Residency:
    """When one model is in memory."""

    preload: bool = True
    """Load at start, before the server is ready (true), or at the first request that names it (false)."""
    keep_alive: float | None = None
    """Seconds with no request on it before it is unloaded (and loaded again by the next request); None:
    never. 0: as soon as its last request ends."""


ALWAYS = Residency()
"""A model loaded at start and kept: every model that says nothing else (and every `--model`)."""


class OverBudget(ModelError):
    """A model cannot be loaded within the server's model memory budget (503). `retry`: it could once models
    in use are done (a Retry-After is worth giving); false where it is larger than the whole budget."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def too_large(model_id: str, need: int, budget: int) -> OverBudget | None:
    """The error for a model larger than the whole budget; None where it fits once the others are unloaded."""
    if need <= budget:
        return None
    return OverBudget(
        f"model {model_id!r} needs about {mib(need)} (its weight files) and the server's model memory budget "
        f"(EMBEDSERVE_MODEL_MEMORY_BYTES) is {mib(budget)}: it cannot be loaded here",
        retry=False,
    )


def evictions(need: int, budget: int, held: int, idle: Sequence[tuple[str, int]]) -> list[str] | None:
    """The models to unload so that `need` more bytes fit in `budget` where `held` are taken: the fewest of
    `idle` (models with no work, least recently used first, with the bytes each holds) in that order. [] where
    it fits already; None where unloading every idle model would not make room (models in use hold it)."""
    chosen: list[str] = []
    for model_id, nbytes in idle:
        if held + need <= budget:
            break
        chosen.append(model_id)
        held -= nbytes
    return chosen if held + need <= budget else None
