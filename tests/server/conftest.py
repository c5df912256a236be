"""Servers shared by several route modules."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import AppServer, start_app
from tests.support import free_port


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


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis on loopback for one test module (`.ci/run` installs Debian's redis-server)."""
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
        assert time.monotonic() < deadline and process.poll() is None, "redis-server did not start"
        time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)
