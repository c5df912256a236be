"""`embedserve embed INPUT --out OUTPUT`: a corpus file embedded in-process through the server's own batcher, into a
.npy matrix or a Parquet file of (id, vector); resumable after a kill, and clear about bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.tiny_models import CORPUS
from tests.support import ROOT

EMBEDSERVE = str(Path(sys.executable).parent / "embedserve")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDSERVE_LOG_LEVEL": "warning"}


def texts(count: int) -> list[str]:
    return [f"{CORPUS[i % len(CORPUS)]} ({i})" for i in range(count)]


def embed_cli(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [EMBEDSERVE, "embed", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600
    )
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def encode(tiny_bert_dir: Path):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_bert_dir), device="cpu")
    return lambda batch: model.encode(batch, convert_to_numpy=True, batch_size=64)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def test_jsonl_in_parquet_out_keeps_ids_and_equals_encode(tmp_path: Path, tiny_bert_dir: Path, encode) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    corpus = texts(300)
    source = write_jsonl(tmp_path / "in.jsonl", [{"doc": f"d{i}", "body": t} for i, t in enumerate(corpus)])
    out = tmp_path / "out.parquet"
    done = embed_cli(source, "--out", out, "--model", tiny_bert_dir, "--text-column", "body", "--id-column", "doc",
                     "--part-rows", "64")  # fmt: skip
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [f"d{i}" for i in range(300)]
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(vectors, encode(corpus), atol=1e-5, rtol=0)
    assert not (tmp_path / "out.parquet.parts").exists()
    assert "embedded 300 texts into" in done.stderr  # off a terminal: progress lines, then the summary


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_csv_and_parquet_in_npy_out_in_input_order(tmp_path: Path, tiny_bert_dir: Path, encode, kind: str) -> None:  # type: ignore[no-untyped-def]
    corpus = texts(150)
    if kind == "csv":
        source = tmp_path / "in.csv"
        with source.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "other"])
            writer.writerows([[t, 'x, "quoted"'] for t in corpus])
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        source = tmp_path / "in.parquet"
        pq.write_table(pa.table({"text": corpus, "n": list(range(150))}), source, row_group_size=40)
    out = tmp_path / "out.npy"
    embed_cli(source, "--out", out, "--model", tiny_bert_dir, "--part-rows", "32")
    vectors = np.load(out)
    assert vectors.dtype == np.float32 and vectors.shape == (150, 32)
    np.testing.assert_allclose(vectors, encode(corpus), atol=1e-5, rtol=0)


def test_a_killed_run_continues_where_it_stopped(tmp_path: Path, tiny_bert_dir: Path, encode) -> None:  # type: ignore[no-untyped-def]
    corpus = texts(8_000)
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in corpus])
    out = tmp_path / "out.npy"
    parts = tmp_path / "out.npy.parts"
    command = [EMBEDSERVE, "embed", str(source), "--out", str(out), "--model", str(tiny_bert_dir), "--part-rows", "500"]
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(list(parts.glob("part-*.npy"))) < 2:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "no part was written in time"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(60)
    process.stderr.close()  # type: ignore[union-attr]
    written = len(list(parts.glob("part-*.npy")))
    assert not out.exists() and 2 <= written < len(corpus) // 500  # stopped part-way

    done = embed_cli(source, "--out", out, "--model", tiny_bert_dir, "--part-rows", "500")
    assert f"continuing after {written * 500:,} rows done before" in done.stderr
    vectors = np.load(out)
    assert vectors.shape == (len(corpus), 32)
    np.testing.assert_allclose(vectors, encode(corpus), atol=1e-5, rtol=0)


def test_a_rerun_with_other_settings_is_refused_rather_than_mixed(tmp_path: Path, tiny_bert_dir: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts(10)])
    out = tmp_path / "out.npy"
    (tmp_path / "out.npy.parts").mkdir()
    (tmp_path / "out.npy.parts" / "manifest.json").write_text(json.dumps({"input": "another.jsonl"}))
    done = embed_cli(source, "--out", out, "--model", tiny_bert_dir, check=False)
    assert done.returncode == 2
    assert "holds parts of another run" in done.stderr and "delete it to start again" in done.stderr


@pytest.mark.parametrize(
    ("rows", "flags", "message"),
    [
        ([{"body": "a"}], [], "row 0 has no 'text' (name it with --text-column)"),
        ([{"text": "a"}, {"text": ""}], [], "row 1 has an empty or non-text 'text'"),
        ([{"text": "a"}], ["--id-column", "key"], "row 0 has no 'key'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, tiny_bert_dir: Path, rows, flags, message) -> None:  # type: ignore[no-untyped-def]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    done = embed_cli(source, "--out", tmp_path / "out.npy", "--model", tiny_bert_dir, *flags, check=False)
    assert done.returncode == 2
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert message in line


def test_an_output_of_another_kind_is_refused_before_any_work(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    done = embed_cli(source, "--out", tmp_path / "out.csv", check=False)
    assert done.returncode == 2 and "must end in .npy or .parquet" in done.stderr
