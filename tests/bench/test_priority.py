"""`python -m bench.priority` at toy size: queries alone, bulk alone, and both together marked and unmarked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def test_a_toy_run_reports_every_load_and_its_ratios(tmp_path: Path) -> None:
    out = tmp_path / "priority.json"
    argv = [sys.executable, "-m", "bench.priority", "--interactive-clients", "2", "--bulk-clients", "1"]
    argv += ["--bulk-items", "4", "--duration", "1", "--warmup", "0.5", "--out", str(out)]
    done = subprocess.run(
        argv, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["alone"]["interactive"]["concurrency"] == 2 and result["alone"]["bulk"]["items_per_request"] == 4
    for name in ("marked", "unmarked"):
        run = result[name]
        assert run["interactive"]["items_per_s"] > 0 and run["bulk"]["items_per_s"] > 0
        total = run["interactive"]["items_per_s"] + run["bulk"]["items_per_s"]
        assert run["items_over_bulk_alone"] == round(total / result["alone"]["bulk"]["items_per_s"], 3)
    assert "marked: interactive p50" in done.stderr and "unmarked: interactive p50" in done.stderr
