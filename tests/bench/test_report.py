"""The bench report's comparison with the peers: per load, our fastest contender against their fastest."""

from __future__ import annotations

from bench.report import render
from bench.run import bracketed


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


def meta(started: str) -> dict:
    return {"started": started, "command": "c", "cores": 2, "cpu": "cpu", "git": "g", "python": "3"}


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


def test_our_engines_are_compared_with_the_runs_torch_server() -> None:
    """Since backend auto, `embedserve` is ONNX fp32 and `embedserve-torch` the torch server; in older runs
    `embedserve` was torch."""

    def result(started: str, *names: str) -> dict:
        return {
            "meta": {"started": started, "command": "c", "cores": 2, "cpu": "cpu", "git": "g", "python": "3"},
            "settings": {"duration": 1, "warmup": 1, "seed": 0},
            "ceiling": {},
            "contenders": [contender(name, run("short", 32, 100.0 * (i + 1), 90)) for i, name in enumerate(names)],
        }

    now = render(result("2026-12-05T00:00:00Z", "embedserve-torch", "embedserve", "embedserve-onnx-int8"))
    assert "Against the torch server (`embedserve-torch`)" in now
    assert "| embedserve | 1.00× (500 / 500 MB) | short | 32 × 1 | 2.00× |" in now
    assert "| embedserve-onnx-int8 | 1.00× (500 / 500 MB) | short | 32 × 1 | 3.00× |" in now
    assert "Against the torch server" not in render(result("2026-12-05T00:00:00Z", "embedserve", "embedserve-onnx"))
    before = render(result("2026-11-29T04:55:15Z", "embedserve", "embedserve-onnx"))
    assert (
        "Against the torch server (`embedserve`)" in before
        and "| embedserve-onnx | 1.00× (500 / 500 MB) | short | 32 × 1 | 2.00× |" in before
    )


def test_the_ceiling_table_shows_the_onnx_ceiling_beside_torchs() -> None:
    result = {
        "meta": meta("2026-12-05T00:00:00Z"),
        "settings": {"duration": 1, "warmup": 1, "seed": 0},
        "ceiling": {"short": {"items_per_s": 458.0, "single_encode_p50_ms": 11.2}},
        "ceiling_onnx": {"short": {"items_per_s": 624.3, "single_encode_p50_ms": 4.01}},
        "contenders": [
            contender("embedserve", run("short", 32, 458.0, 90)),
            contender("embedserve-torch", run("short", 32, 229.0, 90)),
        ],
    }
    text = render(result)
    assert "| short | torch | 458.0 | - | 11.20 |" in text and "| short | onnx fp32 | 624.3 | - | 4.01 |" in text
    assert "| embedserve | short | 32 × 1 | 458.0 | 73% |" in text  # the default engine serves ONNX: its ceiling
    assert "| embedserve-torch | short | 32 × 1 | 229.0 | 50% |" in text  # torch's
    result["meta"]["started"] = "2026-11-29T00:00:00Z"  # before backend auto, `embedserve` served torch
    assert "| embedserve | short | 32 × 1 | 458.0 | 100% |" in render(result)


def test_a_ceiling_measured_before_and_after_the_contenders_shows_both_and_rates_them_by_its_mean() -> None:
    before = {"items_per_s": 440.0, "single_encode_p50_ms": 11.0, "threads": 2}
    after = {"items_per_s": 476.0, "single_encode_p50_ms": 11.4, "threads": 2}
    result = {
        "meta": meta("2026-12-05T14:00:00Z"),
        "settings": {"duration": 1, "warmup": 1, "seed": 0},
        "ceiling": {"short": bracketed(before, after)},
        "contenders": [contender("embedserve-torch", run("short", 32, 229.0, 90), run("short", 1, 80.0, 30))],
    }
    text = render(result)
    assert "| short | torch | 458.0 | 440.0 / 476.0 | 11.20 |" in text
    assert "| embedserve-torch | short | 32 × 1 | 229.0 | 50% |" in text
    assert "| embedserve-torch | short | 1 × 1 | 80.0 | 17% | 80.0 | 15.00 | 30.00 | +3.80 |" in text


def test_the_header_names_the_cpu_with_the_features_that_tell_its_kinds_apart() -> None:
    """One model name ("AMD EPYC") covers CPUs with and without AVX-512 VNNI; runs before the flags were recorded
    still render."""
    meta = {"started": "t", "command": "c", "cores": 2, "cpu": "AMD EPYC", "git": "g", "python": "3"}
    result = {"meta": meta, "settings": {"duration": 1, "warmup": 1, "seed": 0}, "ceiling": {}, "contenders": []}
    assert "2 cores (AMD EPYC), commit g" in render(result)
    meta["isa_flags"] = ["avx2", "avx512f", "avx512_vnni"]
    assert "2 cores (AMD EPYC; avx2 avx512f avx512_vnni), commit g" in render(result)
