"""The bench's multi-vector contenders: a model folder given a ColBERT head (bench.colbert_folder) serves
/v1/multi-vector, and the load generator's multi-vector body formats ask it as Jina's clients do and count one
answer per text, in JSON floats and in base64 rows."""

from __future__ import annotations

from pathlib import Path

import orjson

from bench.colbert_folder import colbert_folder
from bench.loadgen import BODY_FORMATS
from bench.servers import MULTIVECTOR_CONTENDERS, contender
from tests.inprocess import start_app


def test_a_folder_with_a_colbert_head_answers_each_multi_vector_body(tiny_bert_dir: Path, tmp_path: Path) -> None:
    folder = colbert_folder(tiny_bert_dir, tmp_path / "colbert")
    assert (folder / "config.json").is_symlink() and (folder / "colbert_linear.pt").is_file()
    served = start_app(tmp_path, "--model", f"m={folder}")
    try:
        for name, body in MULTIVECTOR_CONTENDERS.items():
            spec = contender(name, 1, "m", str(folder), [], {})
            assert (spec.embeddings_path, spec.body) == ("/v1/multi-vector", body)
            texts = ["one short text", "and a second, longer one about libraries"]
            payload = BODY_FORMATS[body].encode("m", texts)
            answer = served.http.post(
                spec.embeddings_path, content=payload, headers={"Content-Type": "application/json"}
            )
            assert answer.status_code == 200, answer.text
            assert BODY_FORMATS[body].count(answer.content) == 2
            rows = orjson.loads(answer.content)["data"][1]["embeddings"]
            assert isinstance(rows[0], str) == (body == "multivector-base64")
    finally:
        served.stop()
