"""`python -m bench.loop_cost`: the event loop's CPU a request, with the app called in-process.

Run as the command runs, in its own process (it sets up logging as a server does), serving the test suite's hashing
backend, which that process registers before the tool starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def loop_cost(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    folder = tmp_path / "hashing"
    folder.mkdir(exist_ok=True)
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  - {{id: words, source: {folder}, backend: hashing}}\n")
    code = "import sys, tests.hashing_backend; from bench.loop_cost import main; main(sys.argv[1:])"
    argv = [sys.executable, "-c", code, "--models-file", str(models), *args]
    return subprocess.run(argv, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300)


def test_every_request_is_answered_and_the_loops_cpu_reported_apart_from_the_process(tmp_path: Path) -> None:
    done = loop_cost(tmp_path, "--model-id", "words", "--requests", "200", "--warmup", "20", "--clients", "8")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["requests"] == 200 and result["statuses"] == {"200": 200} and result["clients"] == 8
    assert 0 < result["loop_cpu_us_per_request"] <= result["process_cpu_us_per_request"]
    assert result["requests_per_s"] > 0 and result["workload"] == "short" and result["access_log"] is True
    assert result["http"] is True
    assert result["cpu"] and isinstance(result["isa_flags"], list)
    assert '"logger":"embedserve.access"' not in done.stdout + done.stderr  # the access log goes to the null device


def test_a_run_whose_requests_fail_measures_nothing(tmp_path: Path) -> None:
    """The path of an error (here 404: the model asked is not served) is not what a request costs."""
    done = loop_cost(tmp_path, "--model-id", "other", "--requests", "30", "--warmup", "5", "--clients", "4")
    assert done.returncode == 1 and done.stdout == ""
    assert "not every request was answered 200: {404: 30}" in done.stderr


def test_without_http_every_text_goes_straight_to_the_served_model(tmp_path: Path) -> None:
    done = loop_cost(
        tmp_path, "--model-id", "words", "--requests", "200", "--warmup", "20", "--clients", "8", "--no-http"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["http"] is False and result["requests"] == 200 and result["statuses"] == {"200": 200}
    assert 0 < result["loop_cpu_us_per_request"] <= result["process_cpu_us_per_request"]
    missing = loop_cost(tmp_path, "--model-id", "other", "--requests", "30", "--warmup", "5", "--no-http")
    assert missing.returncode == 1 and missing.stdout == "" and "'other' is not served" in missing.stderr
