"""Jina's POST /v1/multi-vector: bge-m3's ColBERT rows per text, in Jina's shape, from a folder with
colbert_linear.pt; a clear 400 in OpenAI's shape from a model without one."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.inprocess import AppServer, start_app
from tests.models.test_multivector import flag_embedding_colbert

TEXTS = ["Where do students find answers?", "The library finds the answer to your question quickly.", "short"]


@pytest.fixture(scope="module")
def colbert_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_bge_m3_dir: Path, tiny_bert_dir: Path
) -> Iterator[AppServer]:
    folder = tmp_path_factory.mktemp("multi-vector")
    models_file = folder / "models.yaml"
    entries = [{"id": "bge-m3", "source": str(tiny_bge_m3_dir)}, {"id": "e5-tiny", "source": str(tiny_bert_dir)}]
    models_file.write_text(yaml.safe_dump({"models": entries}))
    running = start_app(folder, "--models", str(models_file))
    yield running
    running.stop()


def test_each_text_gets_its_colbert_rows_in_jinas_shape(colbert_server: AppServer, tiny_bge_m3_dir: Path) -> None:
    response = colbert_server.http.post("/v1/multi-vector", json={"model": "bge-m3", "input": TEXTS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "bge-m3" and body["object"] == "list"
    expected = flag_embedding_colbert(tiny_bge_m3_dir, TEXTS, 512)
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and {d["object"] for d in body["data"]} == {"embeddings"}
    for data, reference in zip(body["data"], expected):
        np.testing.assert_allclose(np.array(data["embeddings"]), reference, atol=1e-5)
    assert body["usage"]["total_tokens"] == sum(len(r) + 1 for r in expected)  # the first token counts, unreturned


def test_base64_rows_are_little_endian_float32(colbert_server: AppServer) -> None:
    plain = colbert_server.http.post("/v1/multi-vector", json={"model": "bge-m3", "input": TEXTS[2]}).json()
    packed = colbert_server.http.post(
        "/v1/multi-vector", json={"model": "bge-m3", "input": TEXTS[2], "embedding_type": "base64"}
    ).json()
    rows = [np.frombuffer(base64.b64decode(row), dtype="<f4") for row in packed["data"][0]["embeddings"]]
    np.testing.assert_allclose(rows, plain["data"][0]["embeddings"], atol=1e-7)


def test_a_model_without_a_colbert_head_and_a_width_it_lacks_are_400s(colbert_server: AppServer) -> None:
    without = colbert_server.http.post("/v1/multi-vector", json={"model": "e5-tiny", "input": "x"})
    assert without.status_code == 400
    assert without.json()["error"]["param"] == "model" and "multi-vector" in without.json()["error"]["message"]
    narrower = colbert_server.http.post("/v1/multi-vector", json={"model": "bge-m3", "input": "x", "dimensions": 8})
    assert narrower.status_code == 400 and narrower.json()["error"]["param"] == "dimensions"
    unknown = colbert_server.http.post("/v1/multi-vector", json={"model": "nope", "input": "x"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
