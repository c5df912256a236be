"""A server of INT8 ONNX models, made with `embedserve quantize`, runs with torch unimportable.

The server process blocks `import torch` (and transformers, sentence-transformers) before anything
else, so a stray import anywhere on the serving path fails the model load and this test.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support import RunningServer, cosine_rows, quantize_cli, start_server, stop_server

BLOCK_TORCH = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'sentence_transformers', 'optimum'):
            raise ImportError(f'{name} is blocked: an ONNX server must not need it')
sys.meta_path.insert(0, NoTorch())
from embedserve.server.cli import main
main()
"""
QUERY = "Where do students find answers?"
DOCUMENTS = ["The library finds the answer to your question quickly.", "Студенты быстро находят ответ.", "short"]


@pytest.fixture(scope="module")
def int8_models(
    tmp_path_factory: pytest.TempPathFactory, minilm_int8: Path, tiny_reranker_dir: Path
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("int8")
    return {
        "minilm": minilm_int8,  # tests/conftest.py: `embedserve quantize` of the bundled MiniLM
        # The tiny reranker has random weights: its INT8 scores are far from fp32, so it is forced.
        "reranker": quantize_cli(str(tiny_reranker_dir), root / "reranker", "--force"),
    }


@pytest.fixture(scope="module")
def onnx_server(tmp_path_factory: pytest.TempPathFactory, int8_models: dict[str, Path]) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("onnx-server"),
        "--model",
        f"minilm-int8={int8_models['minilm']}",
        "--model",
        f"reranker-int8={int8_models['reranker']}",
        launcher=[sys.executable, "-c", BLOCK_TORCH],
    )
    yield running
    stop_server(running)


def test_models_are_served_by_onnx_int8(onnx_server: RunningServer) -> None:
    cards = {c["id"]: c for c in onnx_server.http.get(f"{onnx_server.url}/v1/models").json()["data"]}
    assert {(c["kind"], c["backend"], c["dtype"]) for c in cards.values()} == {
        ("embed", "onnx-int8", "int8"),
        ("rerank", "onnx-int8", "int8"),
    }


def test_int8_embeddings_over_both_routes_stay_close_to_the_float32_model(
    onnx_server: RunningServer, reference_model
) -> None:  # type: ignore[no-untyped-def]
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    openai = onnx_server.http.post(
        f"{onnx_server.url}/v1/embeddings", json={"model": "minilm-int8", "input": texts}
    ).json()
    got = np.array([d["embedding"] for d in openai["data"]])
    assert cosine_rows(got, reference_model.encode(texts, normalize_embeddings=True)).min() >= 0.97
    assert got[0] @ got[1] > got[0] @ got[2]
    native = onnx_server.http.post(f"{onnx_server.url}/embed", json={"model": "minilm-int8", "text": texts[0]}).json()
    # Dynamic INT8 scales activations per batch, so one text alone differs slightly from it in a batch.
    assert native["dim"] == 384 and float(np.dot(native["embedding"], got[0])) >= 0.99


def test_int8_reranking_answers_in_both_shapes(onnx_server: RunningServer) -> None:
    cohere = onnx_server.http.post(
        f"{onnx_server.url}/v1/rerank", json={"model": "reranker-int8", "query": QUERY, "documents": DOCUMENTS}
    )
    assert cohere.status_code == 200, cohere.text
    results = cohere.json()["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    assert all(0 <= r["relevance_score"] <= 1 for r in results)
    tei = onnx_server.http.post(
        f"{onnx_server.url}/rerank", json={"model": "reranker-int8", "query": QUERY, "texts": DOCUMENTS}
    )
    assert [r["index"] for r in tei.json()] == [r["index"] for r in results]
