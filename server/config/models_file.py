"""The YAML models file: a top-level `models:` list, one entry per served model.

A local entry is a ModelSpec (only `id` and `source` are required) plus its serving settings: optional
`batching:` limits that override the server-wide ones for that model, and when it is in memory (`preload`,
`keep_alive`: server.serving.residency). An entry with `kind: upstream` is a
remote model (an UpstreamSpec: protocol, endpoints, ...) that requests are relayed to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from embedserve.batching.config import BatchingConfig
from embedserve.models.sources import guess_backend, guess_kind
from embedserve.models.spec import ModelSpec
from embedserve.server.config.errors import file_error
from embedserve.server.serving.residency import Residency
from embedserve.server.serving.upstream.config import UpstreamSpec

_SERVING = {"batching", "preload", "keep_alive"}
"""An entry's serving settings: not the model's own (ModelSpec), so the model layer never sees them."""


class ModelEntry(ModelSpec):
    batching: dict[str, Any] = Field(default_factory=dict, description="Batching limits for this model.")
    preload: bool = Field(
        True, description="Load at start, before the server is ready; false: at the first request that names it."
    )
    keep_alive: float | None = Field(
        None,
        ge=0,
        description="Seconds with no request on it before the model is unloaded (the next request loads it "
        "again); default: never.",
    )

    def spec(self) -> ModelSpec:
        """Its settings; a `kind` or `backend` it does not say is read off the folder as `--model` reads it
        (models.sources: an `embedserve quantize` folder is ONNX, INT8 where it holds that graph)."""
        fields = self.model_dump(exclude=_SERVING, exclude_unset=True)
        if "kind" not in fields:
            fields["kind"] = guess_kind(self.source)
        if "backend" not in fields:
            fields["backend"] = guess_backend(self.source)
        return ModelSpec(**fields)

    def batching_config(self, defaults: BatchingConfig) -> BatchingConfig:
        return BatchingConfig(**{**defaults.model_dump(exclude_unset=True), **self.batching})

    def residency(self) -> Residency:
        return Residency(preload=self.preload, keep_alive=self.keep_alive)


def _entry_kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return "upstream" if kind == "upstream" else "local"


Entry = Annotated[
    Annotated[ModelEntry, Tag("local")] | Annotated[UpstreamSpec, Tag("upstream")], Discriminator(_entry_kind)
]


class ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[Entry] = Field(min_length=1)


def load_models_file(path: Path | str) -> list[ModelEntry | UpstreamSpec]:
    """Reads and validates the file; errors (ConfigError) name the file, the entry and the field."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    try:
        return ModelsFile.model_validate(data).models
    except ValidationError as exc:
        raise file_error(path, exc, data, "models") from None
