"""`python -m bench.cpu_kind`: the figures issues 27 and 32 ask of every CPU kind, in one command, judged.

The machines this project runs on change CPU from one session to the next (README: a table per CPU kind), and each
kind needs the same rows: the default engine against torch and INT8, against its ONNX ceiling, beside a busy core and
under a CPU quota, and under a retry storm. This runs them on the machine at hand, each step in its own `python -m
bench` or `python -m bench.storm` process writing its usual results into `--out/<stamp>-cpu-kind/<step>/`:

1. `main`: embedserve (the default), embedserve-torch and embedserve-onnx-int8, `short` and `mixed`, 1 and 32 clients,
   with both in-process ceilings;
2. `quiet-N` and `hog-N`, alternated `--rounds` times: the default alone, `short` and `mixed` at 32 clients, without
   and beside one busy core (`--hog 1`); then `quota`: the same under a 1.5-CPU quota (`--cpu-quota 1.5`);
3. `storm`: `bench.storm --workload mixed --clients 32 --items 4`;
4. with `--suite "make test"`, last: the test suite, timed (`suite.json`, its output's tail in `suite.log`).

Then `<stamp>-cpu-kind.md` (and `.json`): the CPU (model name and ISA flags), each target with its figure, the
figures it comes from and whether it is met. Ratios are taken within this one run only. The machine should be quiet
but for the hog the steps start themselves. About 12 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench.run import run_meta
from bench.servers import REPO

DEFAULT, TORCH, INT8 = "embedserve", "embedserve-torch", "embedserve-onnx-int8"
VERDICTS = {True: "met", False: "**not met**", None: "not measured"}


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    result: Path
    """Where the step writes its result: a JSON file, or a folder whose newest JSON it is (`python -m bench --out`)."""


@dataclass(frozen=True)
class Row:
    """One target of an issue, judged on this run."""

    issue: int
    what: str
    target: str
    value: float | None
    met: bool | None
    """None: not measured in this run (a step failed, or its contender was left out)."""
    figures: str


def plan(args: argparse.Namespace, out: Path) -> list[Step]:
    """The steps, in the order they run: each bench run's results go to a folder of its own under `out`."""
    timing = ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    bench = [sys.executable, "-m", "bench"]
    contenders = ",".join([DEFAULT, *([TORCH] if args.torch else []), *([INT8] if args.int8 else [])])
    shared = [*bench, "--contenders", DEFAULT, "--workloads", "short,mixed", "--concurrency", "32", *timing]
    shared.append("--no-ceiling")
    main = [*bench, "--contenders", contenders, "--workloads", "short,mixed", "--concurrency", "1,32", *timing]
    runs = [("main", [*main, "--ceiling-seconds", str(args.ceiling_seconds)])]
    for round_ in range(1, args.rounds + 1):
        runs += [(f"quiet-{round_}", shared), (f"hog-{round_}", [*shared, "--hog", "1"])]
    runs.append(("quota", [*shared, "--cpu-quota", "1.5"]))
    steps = [Step(name, [*argv, "--out", str(out / name)], out / name) for name, argv in runs]
    storm = [sys.executable, "-m", "bench.storm", "--workload", "mixed", "--clients", "32", "--items", "4"]
    storm += ["--duration", str(args.storm_duration), "--warmup", str(args.warmup), "--out", str(out / "storm.json")]
    steps.append(Step("storm", storm, out / "storm.json"))
    return steps


def run_steps(steps: list[Step]) -> dict[str, dict[str, Any] | None]:
    """Each step's result (None where it failed: said on stderr, and its rows read "not measured")."""
    results: dict[str, dict[str, Any] | None] = {}
    for step in steps:
        print(f"cpu_kind: {step.name} ...", file=sys.stderr, flush=True)
        done = subprocess.run(step.argv, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"cpu_kind: {step.name} failed ({done.returncode}):\n{done.stderr[-2000:]}", file=sys.stderr)
            results[step.name] = None
            continue
        results[step.name] = _read_result(step.result)
    return results


def run_suite(command: str, out: Path) -> dict[str, Any]:
    """The test suite's wall-clock time and whether it passed (issue 27: `make test` under 10 minutes on every
    kind), its output's tail in suite.log."""
    print(f"cpu_kind: suite ({command}) ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(shlex.split(command), cwd=REPO, capture_output=True, text=True)
    result = {"command": command, "seconds": round(time.perf_counter() - started, 1), "passed": done.returncode == 0}
    (out / "suite.log").write_text((done.stdout + done.stderr)[-20000:])
    (out / "suite.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _read_result(path: Path) -> dict[str, Any] | None:
    if path.suffix == ".json":
        return json.loads(path.read_text())
    found = sorted(path.glob("*.json"))
    return json.loads(found[-1].read_text()) if found else None


# -- reading a bench result ---------------------------------------------------------------------


def _contender(result: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    if result is None:
        return None
    return next((c for c in result["contenders"] if c["name"] == name and "error" not in c), None)


def _run(result: dict[str, Any] | None, name: str, workload: str, clients: int) -> dict[str, Any] | None:
    contender = _contender(result, name)
    if contender is None:
        return None
    return next(
        (
            r
            for r in contender["runs"]
            if r["workload"] == workload and r["concurrency"] == clients and r["items_per_request"] == 1
        ),
        None,
    )


def _items(result: dict[str, Any] | None, name: str, workload: str, clients: int = 32) -> float | None:
    run = _run(result, name, workload, clients)
    return run["items_per_s"] if run else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _mean(values: list[float | None]) -> float | None:
    """The mean, or None unless every value was measured (a failed round would skew it)."""
    return round(statistics.fmean(values), 1) if values and None not in values else None  # type: ignore[arg-type]


# -- judging -------------------------------------------------------------------------------------


def _figures(*pairs: tuple[str, float | None]) -> str:
    return ", ".join(f"{label} {'-' if value is None else f'{value:,.1f}'}" for label, value in pairs)


def _row(issue: int, what: str, value: float | None, target: float, at_least: bool, figures: str) -> Row:
    met = None if value is None else (value >= target if at_least else value <= target)
    return Row(issue, what, f"{'≥' if at_least else '≤'} {target:g}", value, met, figures)


def _versus(
    issue: int,
    what: str,
    ours: float | None,
    other: float | None,
    target: float,
    labels: tuple[str, str],
    *,
    at_most: bool = False,
) -> Row:
    """`ours ÷ other` against a target: at least it (throughput), or `at_most` it (a cost: latency, memory)."""
    return _row(issue, what, _ratio(ours, other), target, not at_most, _figures((labels[0], ours), (labels[1], other)))


def _of_ceiling(
    issue: int, workload: str, ours: dict[str, float | None], ceilings: dict[str, Any], target: float
) -> Row:
    """The default's items/s of its ONNX ceiling; where the ceiling was measured before and after the contenders
    (bench.run.bracketed), against their mean, with both in the figures."""
    ceiling = ceilings.get(workload) or {}
    what = f"`{workload}` 32×1 of the ONNX ceiling"
    row = _versus(issue, what, ours[workload], ceiling.get("items_per_s"), target, ("items/s", "ceiling"))
    if "after" in ceiling:
        both = _figures(("before", ceiling["before"]["items_per_s"]), ("after", ceiling["after"]["items_per_s"]))
        row = replace(row, figures=f"{row.figures} ({both})")
    return row


def rows(results: dict[str, dict[str, Any] | None]) -> list[Row]:
    """Every target of issues 27 and 32 that one CPU kind is judged by, from the steps' results."""
    main = results.get("main")
    ceilings = (main or {}).get("ceiling_onnx") or {}
    ours = {w: _items(main, DEFAULT, w) for w in ("short", "mixed")}
    torch = {w: _items(main, TORCH, w) for w in ("short", "mixed")}
    int8 = {w: _items(main, INT8, w) for w in ("short", "mixed")}
    p50, torch_p50 = (
        run["latency_ms"]["p50"] if run else None for run in (_run(main, n, "short", 1) for n in (DEFAULT, TORCH))
    )
    rss, torch_rss = ((_contender(main, n) or {}).get("peak_rss_mb") for n in (DEFAULT, TORCH))
    direct = (ceilings.get("short") or {}).get("single_encode_p50_ms")
    out = [
        _versus(32, "default ÷ torch, `short` 32×1", ours["short"], torch["short"], 1.25, ("items/s", "torch")),
        _versus(32, "default ÷ torch, `mixed` 32×1", ours["mixed"], torch["mixed"], 1.0, ("items/s", "torch")),
        _versus(32, "one client's `short` p50, default ÷ torch", p50, torch_p50, 0.4, ("ms", "torch"), at_most=True),
        _versus(32, "peak RSS, default ÷ torch", rss, torch_rss, 0.4, ("MB", "torch"), at_most=True),
        _of_ceiling(32, "short", ours, ceilings, 0.85),
        _of_ceiling(27, "short", ours, ceilings, 0.75),
        _of_ceiling(32, "mixed", ours, ceilings, 1.0),
        _row(
            27,
            "one client's `short` p50 over a direct encode, ms",
            round(p50 - direct, 2) if p50 is not None and direct is not None else None,
            2.0,
            False,
            _figures(("p50 ms", p50), ("direct encode ms", direct)),
        ),
        _versus(27, "INT8 ÷ torch, `short` 32×1", int8["short"], torch["short"], 1.3, ("items/s", "torch")),
        _versus(27, "INT8 ÷ torch, `mixed` 32×1", int8["mixed"], torch["mixed"], 1.3, ("items/s", "torch")),
    ]
    rounds = sorted(int(name.split("-")[1]) for name in results if name.startswith("quiet-"))
    for workload in ("short", "mixed"):
        quiet = _mean([_items(results.get(f"quiet-{r}"), DEFAULT, workload) for r in rounds])
        hog = _mean([_items(results.get(f"hog-{r}"), DEFAULT, workload) for r in rounds])
        quota = _items(results.get("quota"), DEFAULT, workload)
        what = f"`{workload}` 32×1 of quiet"
        out.append(_versus(32, f"beside a busy core, {what}", hog, quiet, 0.7, ("mean items/s", "quiet")))
        out.append(_versus(32, f"under 1.5 CPUs, {what}", quota, quiet, 0.65, ("items/s", "quiet")))
    storm = (results.get("storm") or {}).get("runs") or [None]
    run = storm[0]
    ratio = run["storm_over_capacity"] if run else None
    misses = run["deadline_misses"] if run else None
    figures = _figures(
        ("storm items/s", run["storm"]["items_per_s"] if run else None),
        ("capacity", run["capacity"]["items_per_s"] if run else None),
    )
    met = None if ratio is None or misses is None else ratio >= 0.8 and misses == 0
    out.append(
        Row(32, "retry storm: useful items/s of capacity, no 504", "≥ 0.8", ratio, met, f"{figures}, 504s {misses}")
    )
    suite = results.get("suite")
    minutes = round(suite["seconds"] / 60, 2) if suite else None
    met = None if suite is None or minutes is None else suite["passed"] and minutes <= 10
    passed = "-" if suite is None else "passed" if suite["passed"] else "**failed**"
    out.append(Row(27, "the test suite passes, minutes", "≤ 10", minutes, met, passed))
    return out


def render(meta: dict[str, Any], table: list[Row]) -> str:
    lines = [
        f"# CPU kind report {meta['started']}",
        "",
        f"`{meta['command']}`  ",
        f"{meta['cores']} cores, {meta['cpu']} ({' '.join(meta['isa_flags']) or 'no listed ISA flags'}), "
        f"commit {meta['git']}; steps' results in `{meta['steps_dir']}`",
        "",
        "| issue | target | figure | met | from |",
        "|---:|---|---:|---|---|",
    ]
    for row in table:
        value = "-" if row.value is None else f"{row.value:g}"
        lines.append(f"| {row.issue} | {row.what} {row.target} | {value} | {VERDICTS[row.met]} | {row.figures} |")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_kind", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=12.0, help="measured seconds per load")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--ceiling-seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2, help="quiet and hog runs, alternated")
    p.add_argument("--storm-duration", type=float, default=15.0)
    p.add_argument("--no-torch", dest="torch", action="store_false", help="leave torch out (its rows: not measured)")
    p.add_argument("--no-int8", dest="int8", action="store_false", help="leave INT8 out (its rows: not measured)")
    p.add_argument("--suite", help='also time the test suite with this command, last (e.g. "make test")')
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    return p


def main(argv: list[str] | None = None) -> Path:
    args = _parser().parse_args(argv)
    meta = run_meta(argv, "bench.cpu_kind")
    stamp = meta["started"].replace(":", "").replace("-", "")
    steps_dir = args.out / f"{stamp}-cpu-kind"
    steps_dir.mkdir(parents=True, exist_ok=True)
    results = run_steps(plan(args, steps_dir))
    if args.suite:
        results["suite"] = run_suite(args.suite, steps_dir)
    meta["steps_dir"] = str(steps_dir.relative_to(REPO) if steps_dir.is_relative_to(REPO) else steps_dir)
    table = rows(results)
    summary = args.out / f"{stamp}-cpu-kind.md"
    summary.write_text(render(meta, table))
    summary.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in table]}, indent=2))
    print(summary.read_text())
    print(f"wrote {summary} and {summary.with_suffix('.json')}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
