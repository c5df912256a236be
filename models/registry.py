"""The locally served models by name: ids and aliases resolve to one spec each (it may be empty in a\ngateway that serves only upstream models)."""

from __future__ import annotations

from collections.abc import Sequence

from embedserve.models.errors import UnknownModel
from embedserve.models.spec import ModelSpec


class ModelRegistry:
    def __init__(self, specs: Sequence[ModelSpec]) -> None:
        self._by_name: dict[str, ModelSpec] = {}
        for spec in specs:
            for name in dict.fromkeys(spec.names):
                owner = self._by_name.get(name)
                if owner is not None:
                    raise ValueError(f"model name {name!r} is used by both {owner.id!r} and {spec.id!r}")
                self._by_name[name] = spec
        self.specs: tuple[ModelSpec, ...] = tuple(specs)

    def ids(self, kind: str | None = None) -> list[str]:
        return [s.id for s in self.specs if kind is None or s.kind == kind]

    def find(self, name: str) -> ModelSpec | None:
        """The spec an id or alias names, whatever its kind; None when none does."""
        return self._by_name.get(name)

    def resolve(self, name: str | None, kind: str) -> ModelSpec:
        """The spec a request names; with no name, the only model of that kind."""
        if name is None:
            of_kind = [s for s in self.specs if s.kind == kind]
            if len(of_kind) == 1:
                return of_kind[0]
            raise UnknownModel(None, self.ids(kind), kind)
        spec = self.find(name)
        if spec is None or spec.kind != kind:
            raise UnknownModel(name, self.ids(kind), kind, served_as=spec.kind if spec is not None else None)
        return spec
