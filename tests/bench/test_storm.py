"""`python -m bench.storm` at toy size: a capacity load and a storm of impatient clients on one server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.servers import checkout_env
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


def test_a_server_for_another_checkout_imports_that_checkouts_code(tmp_path: Path) -> None:
    """`--repo OLDER` measures OLDER's code: the editable install would import this checkout's whatever the working
    directory."""
    older = tmp_path / "older"
    older.mkdir()
    (older / "__init__.py").write_text("")
    (older / "marker.py").write_text("WHERE = 'older'\n")
    argv = [sys.executable, "-c", "import embedserve.marker; print(embedserve.marker.WHERE)"]
    with checkout_env(older) as env:
        done = subprocess.run(argv, cwd=older, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "older", done.stderr[-2000:]
    with checkout_env(ROOT) as env:
        assert env == {}  # this checkout is what the install imports anyway
