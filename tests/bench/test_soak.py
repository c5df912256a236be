"""`python -m bench.soak` at toy size: samples of a server's memory, split by kind of mapping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.soak import breakdown
from tests.support import ROOT


def test_this_process_memory_splits_into_its_kinds() -> None:
    parts = breakdown(os.getpid())
    assert parts["file"] > 0 and parts["rss"] > 0
    assert abs(parts["rss"] - (parts["file"] + parts["heap"] + parts["arenas"] + parts["other_anon"])) < 0.5


def test_a_toy_soak_samples_the_server_while_it_runs(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    argv = [sys.executable, "-m", "bench.soak", "toy=embedserve", "--duration", "2", "--every", "0.5"]
    argv += ["--concurrency", "2", "--out", str(out)]
    done = subprocess.run(
        argv, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(out.read_text())
    assert row["variant"] == "toy" and row["items_per_s"] > 0
    assert len(row["samples"]) >= 3 and row["samples"][0]["t"] == 0
    assert all(sample["rss"] > 100 for sample in row["samples"])  # a torch server with its model
