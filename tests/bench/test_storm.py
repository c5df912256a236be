"""`python -m bench.storm` at toy size: a capacity load and a storm of impatient clients on one server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def test_a_toy_storm_reports_both_loads_and_their_ratio(tmp_path: Path) -> None:
    out = tmp_path / "storm.json"
    argv = [sys.executable, "-m", "bench.storm", "--clients", "2", "--items", "1", "--duration", "1"]
    argv += ["--warmup", "0.5", "--max-queue-items", "4", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = json.loads(out.read_text())["runs"]
    assert run["capacity"]["concurrency"] == 2 and run["storm"]["concurrency"] == 20
    assert run["capacity"]["items_per_s"] > 0 and run["storm"]["items_per_s"] > 0
    assert run["storm_over_capacity"] == round(run["storm"]["items_per_s"] / run["capacity"]["items_per_s"], 3)
    assert "x; 429s" in done.stderr
