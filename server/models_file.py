"""The YAML models file: a top-level `models:` list, one entry per served model.

An entry is a ModelSpec (only `id` and `source` are required) plus optional `batching:`
limits that override the server-wide ones for that model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from batching.config import BatchingConfig
from models.spec import ModelSpec


class ModelEntry(ModelSpec):
    batching: dict[str, Any] = Field(default_factory=dict, description="Batching limits for this model.")

    def spec(self) -> ModelSpec:
        return ModelSpec(**self.model_dump(exclude={"batching"}, exclude_unset=True))

    def batching_config(self, defaults: BatchingConfig) -> BatchingConfig:
        return BatchingConfig(**{**defaults.model_dump(exclude_unset=True), **self.batching})


class ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelEntry] = Field(min_length=1)


def load_models_file(path: Path | str) -> list[ModelEntry]:
    """Reads and validates the file; errors name the file and the offending entry."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return ModelsFile.model_validate(data).models
