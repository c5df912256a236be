"""The bench report's comparison with the peers: per load, our fastest contender against their fastest."""

from __future__ import annotations

from bench.report import render


def run(workload: str, clients: int, items_per_s: float, p99: float) -> dict:
    return {
        "workload": workload,
        "concurrency": clients,
        "items_per_request": 1,
        "items_per_s": items_per_s,
        "requests_per_s": items_per_s,
        "latency_ms": {"p50": p99 / 2, "p99": p99},
        "errors": {},
        "server_cpu_cores": 1.0,
        "loadgen_cpu_fraction": 0.01,
        "other_cpu_cores": 0.0,
    }


def contender(name: str, *runs: dict) -> dict:
    return {"name": name, "runs": list(runs), "peak_rss_mb": 500.0, "ready_s": 1.0, "argv": ["x"], "env": {}}


def test_each_load_pits_our_fastest_contender_against_the_fastest_peer() -> None:
    result = {
        "meta": {"started": "t", "command": "c", "cores": 2, "cpu": "cpu", "git": "g", "python": "3"},
        "settings": {"duration": 1, "warmup": 1, "seed": 0},
        "ceiling": {},
        "contenders": [
            contender("embedserve", run("short", 32, 400, 90), run("mixed", 32, 140, 600)),
            contender("embedserve-onnx-int8", run("short", 32, 1200, 40), run("mixed", 32, 100, 700)),
            contender("embedserve-cached", run("short", 32, 9000, 1)),  # the cache is no engine
            contender("infinity", run("short", 32, 300, 120), run("mixed", 32, 70, 900)),
            contender("litserve", run("short", 32, 480, 100)),
            contender("naive", run("short", 32, 5000, 1)),  # a baseline, not a peer
            {"name": "bentoml", "error": "not installed"},
        ],
    }
    table = render(result).split("Fastest embedserve contender against the fastest peer")[1]
    assert "| short | 32 × 1 | embedserve-onnx-int8 | 1,200.0 | 40.0 | litserve | 480.0 | 100.0 | 2.50× |" in table
    assert "| mixed | 32 × 1 | embedserve | 140.0 | 600.0 | infinity | 70.0 | 900.0 | 2.00× |" in table
