"""Client libraries whose pins conflict with ours, each from a venv of its own, against a server on a loopback
socket, used as their users use them. langchain_cohere's CohereEmbeddings needs cohere < 6 (we test cohere 7's
Client in the fast tier): it posts Cohere's v1 /v1/embed with `embedding_types`, for documents and for queries.

Slow tier: the venv is installed from the package registries (~20 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.inprocess import AppServer, start_app

LANGCHAIN_COHERE = ["langchain-cohere==0.6.0", "cohere>=5.18,<6"]
SCRIPT = """
import json, sys
from langchain_cohere import CohereEmbeddings
embeddings = CohereEmbeddings(model=sys.argv[2], cohere_api_key="unused", base_url=sys.argv[1], max_retries=0)
print(json.dumps({"documents": embeddings.embed_documents(sys.argv[3:]), "query": embeddings.embed_query(sys.argv[3])}))
"""
TEXTS = ["How do embeddings work?", "Библиотека открыта до восьми."]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_gemma3_dir: Path) -> Iterator[AppServer]:
    running = start_app(tmp_path_factory.mktemp("clients"), "--model", f"gemma={tiny_gemma3_dir}")
    yield running
    running.stop()


def venv(root: Path, packages: list[str]) -> Path:
    """A venv at `root` with `packages`; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *packages], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return python


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_langchain_cohere_embeds_documents_and_queries_as_v2_does(served: AppServer, tmp_path: Path) -> None:
    python = venv(tmp_path / "langchain-cohere", LANGCHAIN_COHERE)
    url = served.listen()
    done = subprocess.run(
        [str(python), "-c", SCRIPT, url, "gemma", *TEXTS], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)

    def v2(input_type: str, texts: list[str]) -> np.ndarray:
        body = {"model": "gemma", "texts": texts, "input_type": input_type, "embedding_types": ["float"]}
        return np.array(served.http.post("/v2/embed", json=body).json()["embeddings"]["float"])

    np.testing.assert_allclose(answer["documents"], v2("search_document", TEXTS), atol=1e-6)
    np.testing.assert_allclose(answer["query"], v2("search_query", TEXTS[:1])[0], atol=1e-6)
    assert not np.allclose(answer["query"], answer["documents"][0], atol=1e-3)  # gemma's query prompt was applied
