"""`python -m bench.burst` at toy size: one server, a warm-up burst and a measured one, every request answered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def test_a_toy_burst_answers_every_request_and_reports_the_median_over_the_makespan(tmp_path: Path) -> None:
    out = tmp_path / "burst.json"
    # Batches of two texts and a window of one batch: 24 texts are a backlog that the window orders.
    argv = [sys.executable, "-m", "bench.burst", "--requests", "6", "--items", "4", "--bursts", "1"]
    argv += ["--arrival-window", "1", "--server-env", "EMBEDSERVE_MAX_BATCH_SIZE=2", "--out", str(out)]
    done = subprocess.run(
        argv, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    (server,) = result["servers"]
    assert server["arrival_window"] == 1
    (burst,) = server["bursts"]
    assert burst["errors"] == {}
    assert 0 < burst["first_s"] <= burst["p50_s"] <= burst["makespan_s"]
    assert abs(burst["p50_over_makespan"] - burst["p50_s"] / burst["makespan_s"]) < 0.01  # both rounded
    assert server["median_p50_over_makespan"] == burst["p50_over_makespan"]
    assert burst["items_per_s"] > 0
    assert "window 1: p50 / makespan" in done.stderr
