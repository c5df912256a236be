"""deploy/ray/embed_job.py: a Parquet corpus embedded by an actor pool under Ray Data, on a one-node cluster with two
actors, equals what `embedserve embed` writes for it on one machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.tiny_models import CORPUS
from tests.support import ROOT

pytest.importorskip("ray.data", reason="ray[data] is not installed: `make install` adds it (pip install -e '.[ray]')")
pytestmark = pytest.mark.slow  # starts a Ray cluster


def test_the_ray_job_writes_what_the_corpus_cli_writes(tmp_path: Path, tiny_bert_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    texts = [f"{CORPUS[i % len(CORPUS)]} ({i})" for i in range(600)]
    source = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"id": [f"doc-{i}" for i in range(600)], "text": texts}), source, row_group_size=100)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDSERVE_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)}

    cli_out = tmp_path / "cli.parquet"
    command = [str(Path(sys.executable).parent / "embedserve"), "embed", str(source), "--out", str(cli_out)]
    done = subprocess.run([*command, "--model", str(tiny_bert_dir), "--id-column", "id"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]

    ray_out = tmp_path / "ray"
    job = [sys.executable, "-m", "deploy.ray.embed_job", str(source), str(ray_out), "--model", str(tiny_bert_dir)]
    job += ["--actors", "2", "--cpus-per-actor", "1", "--block-rows", "64", "--blocks", "6"]
    done = subprocess.run(job, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "embedded 600 rows" in done.stderr and "with 2 actors" in done.stderr

    expected = pq.read_table(cli_out).to_pydict()
    got = ds.dataset(ray_out, format="parquet").to_table().to_pydict()
    assert sorted(got["id"]) == sorted(expected["id"])
    by_id = dict(zip(got["id"], got["vector"]))
    np.testing.assert_allclose(
        np.array([by_id[i] for i in expected["id"]], dtype=np.float32),
        np.array(expected["vector"], dtype=np.float32),
        atol=1e-5,
        rtol=0,
    )
