"""`python -m bench.plot`: a PNG per workload and request size, also when no request of a load was answered."""

from __future__ import annotations

import json
from pathlib import Path

from bench.plot import plot


def _run(concurrency: int, items_per_s: float, p99: float | None) -> dict:
    return {
        "workload": "short",
        "concurrency": concurrency,
        "items_per_request": 32,
        "items_per_s": items_per_s,
        "latency_ms": None if p99 is None else {"p99": p99},
    }


def test_a_run_whose_requests_were_all_refused_is_plotted(tmp_path: Path) -> None:
    # LitServe refuses every request of several texts (400): items/s 0 and no latency at any concurrency.
    result = {
        "meta": {"cpu": "AMD EPYC", "cores": 2},
        "ceiling": {},
        "contenders": [{"name": "litserve", "runs": [_run(1, 0.0, None), _run(8, 0.0, None)]}],
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(result))
    (png,) = plot(path)
    assert png.name == "run-short-32.png" and png.stat().st_size > 0
