"""All upstream models by name, their lifecycle, and run-time changes to their endpoints."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from embedserve.server.serving.upstream.client import UpstreamModel
from embedserve.server.serving.upstream.config import EndpointSpec, UpstreamSpec
from embedserve.server.serving.upstream.persist import save_endpoints
from embedserve.server.telemetry.metrics import Metrics

log = logging.getLogger("embedserve.gateway")


class EndpointConflict(ValueError):
    """The change would leave the upstreams inconsistent (a duplicate URL, no endpoint left)."""


class Gateway:
    def __init__(self, specs: Sequence[UpstreamSpec], metrics: Metrics, *, models_file: Path | None = None) -> None:
        self.models: dict[str, UpstreamModel] = {}
        self._by_name: dict[str, UpstreamModel] = {}
        self.models_file = models_file
        for spec in specs:
            model = UpstreamModel(spec, metrics)
            self.models[spec.id] = model
            for name in dict.fromkeys(spec.names):
                if name in self._by_name:
                    raise ValueError(f"model name {name!r} is used by two upstream entries")
                self._by_name[name] = model
        self._lock = asyncio.Lock()

    @property
    def names(self) -> set[str]:
        return set(self._by_name)

    async def start(self) -> None:
        for model in self.models.values():
            await model.start()

    async def close(self) -> None:
        await asyncio.gather(*(model.close() for model in self.models.values()))

    def named(self, name: str) -> UpstreamModel | None:
        """The upstream model an id or alias names, whatever it serves."""
        return self._by_name.get(name)

    def find(self, name: str, capability: str) -> UpstreamModel | None:
        model = self.named(name)
        return model if model is not None and capability in model.spec.serves else None

    def serving(self, capability: str) -> list[UpstreamModel]:
        return [m for m in self.models.values() if capability in m.spec.serves]

    # -- the admin API's changes -----------------------------------------------------------

    async def add_endpoint(self, model_id: str, endpoint: EndpointSpec) -> bool:
        """Adds an endpoint; returns whether the change was written to the models file."""
        model = self.models[model_id]
        async with self._lock:
            try:
                model.add_endpoint(endpoint)
            except ValueError as exc:
                raise EndpointConflict(str(exc)) from None
            return await self._persist(model)

    async def remove_endpoint(self, model_id: str, url: str) -> bool:
        model = self.models[model_id]
        async with self._lock:
            if model.balancer.find(url) is None:
                raise KeyError(url)
            if len(model.balancer.endpoints) == 1:
                raise EndpointConflict(
                    f"{url} is the last endpoint of {model_id!r}; remove the model from the file instead"
                )
            model.remove_endpoint(url)
            return await self._persist(model)

    async def _persist(self, model: UpstreamModel) -> bool:
        if self.models_file is None:
            return False
        endpoints = [EndpointSpec(url=e.url, weight=e.weight) for e in model.balancer.endpoints]
        try:
            await asyncio.to_thread(save_endpoints, self.models_file, model.spec.id, endpoints)
        except OSError as exc:  # e.g. a read-only ConfigMap mount: the change holds until restart
            log.warning("could not save endpoint change", extra={"file": str(self.models_file), "error": str(exc)})
            return False
        return True
