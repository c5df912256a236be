"""`embedserve bench` runs the benchmark from any folder of a source checkout and writes its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

EMBEDSERVE = [sys.executable, "-c", "from server.cli import main; main()"]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*EMBEDSERVE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_bench_takes_the_benchmarks_own_options(tmp_path: Path) -> None:
    done = run(["bench", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--workloads" in done.stdout and "--contenders" in done.stdout


def test_a_small_custom_run_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "results"
    args = ["bench", "--workloads", "short", "--concurrency", "2", "--duration", "1", "--warmup", "0.5"]
    args += ["--contenders", "embedserve", "--no-ceiling", "--quiet-wait", "0", "--out", str(out)]
    done = run(args, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = out.glob("*.json")
    record = json.loads(result.read_text())
    (contender,) = record["contenders"]
    (load,) = contender["runs"]
    assert load["items_per_s"] > 0 and not load["errors"]
    assert result.with_suffix(".md").exists()
