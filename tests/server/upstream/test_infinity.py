"""A real Infinity server (infinity-emb from PyPI, in its own venv under bench/, serving the MiniLM folder
offline) as an `infinity` upstream: answers equal the model's own embeddings."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from bench.servers import INFINITY_VENV, Server, contender, free_port
from tests.support import ROOT, RunningServer, cosine_rows, start_server, stop_server

pytestmark = pytest.mark.slow  # installs and starts the Infinity peer in a venv of its own

TEXTS = ["How do embeddings work?", "Библиотека открыта до восьми.", "짧은 문장", "a longer passage " * 30]


def ensure_infinity() -> None:
    """Builds Infinity's venv (`make bench-peers`) if missing; skips, saying why, only if that fails."""
    if (INFINITY_VENV / ".installed").exists():
        return
    try:
        done = subprocess.run(["make", "bench-peers"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip("infinity-emb could not be installed within 15 minutes")
    if done.returncode != 0:
        pytest.skip(f"infinity-emb could not be installed: {done.stderr[-600:]}")


@pytest.fixture(scope="module")
def infinity(minilm_dir: str) -> Iterator[str]:
    ensure_infinity()
    port = free_port()
    with Server(contender("infinity", port, "minilm-infinity", minilm_dir, [], {}), port) as server:
        server.wait_ready(timeout=240)
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, infinity: str) -> Iterator[RunningServer]:
    folder: Path = tmp_path_factory.mktemp("infinity-gateway")
    entry = {
        "id": "minilm",
        "kind": "upstream",
        "protocol": "infinity",
        "endpoints": [infinity],
        "upstream_model": "minilm-infinity",
    }
    models_file = folder / "models.yaml"
    models_file.write_text(yaml.safe_dump({"models": [entry]}))
    running = start_server(folder, "--models", str(models_file))
    yield running
    stop_server(running)


def test_infinity_upstream_gives_the_models_own_embeddings(gateway: RunningServer, reference_model) -> None:  # type: ignore[no-untyped-def]
    answer = httpx.post(gateway.url + "/v1/embeddings", json={"model": "minilm", "input": TEXTS}, timeout=60)
    assert answer.status_code == 200, answer.text
    got = np.array([item["embedding"] for item in answer.json()["data"]])
    expected = reference_model.encode(TEXTS, normalize_embeddings=True)
    assert cosine_rows(got, expected).min() > 0.9999
    assert answer.json()["usage"]["prompt_tokens"] > 0  # Infinity's own count

    native = httpx.post(gateway.url + "/embed", json={"model": "minilm", "text": TEXTS[0]}, timeout=60).json()
    assert cosine_rows(np.array([native["embedding"]]), expected[:1]).min() > 0.9999

    health = {card["id"]: card for card in httpx.get(gateway.url + "/v1/models").json()["data"]}
    assert health["minilm"]["protocol"] == "infinity" and health["minilm"]["status"] == "ready"
