"""Servers shared by several route modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import AppServer, start_app


@pytest.fixture(scope="session")
def several_models(tiny_gemma3_dir: Path, tiny_bert_reranker_dir: Path) -> Iterator[AppServer]:
    """Two embedders (the real MiniLM; a tiny EmbeddingGemma, which has prompts) and a tiny BERT reranker:
    what the API shapes that choose a model by name, header or kind are tried against."""
    running = start_app(
        None,
        "--model",
        "all-MiniLM-L6-v2",
        "--model",
        f"gemma={tiny_gemma3_dir}",
        "--model",
        f"rr={tiny_bert_reranker_dir}",
    )
    yield running
    running.stop()
