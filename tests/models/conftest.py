"""Fixtures the model tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedserve.models.embedder import Embedder
from embedserve.models.loading import load_model
from embedserve.models.spec import ModelSpec


@pytest.fixture(scope="module")
def bge_m3(tiny_bge_m3_dir: Path) -> Embedder:
    """The tiny bge-m3 (XLM-R with both extra heads) loaded as the server loads it."""
    model = load_model(ModelSpec(backend="torch", id="bge-m3", source=str(tiny_bge_m3_dir), device="cpu")).model
    assert isinstance(model, Embedder)
    return model
