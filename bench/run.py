"""`python -m bench`: ceiling, then each contender in turn under each load, then the ceiling again; JSON + Markdown
into bench/results/.

Contenders run one at a time on the same cores, and the ceiling runs while no server is up, so every
figure in a run was taken under the same conditions. A shared machine still drifts over the minutes a run takes (the
ONNX ceiling moved 8% between two runs an hour apart): the ceiling is measured before and after the contenders, and
"of ceiling" divides by the mean of both (`bracketed`). The load generator and the ceiling run in their
own processes; this orchestrator only launches them and waits.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from bench import report
from bench.ceiling import cores, default_model_dir
from bench.contention import cpu_quota, hog
from bench.procfs import wait_quiet
from bench.servers import (
    CONTENDERS,
    OFFLINE_ENV,
    ONNX_BACKENDS,
    OPT_IN_CONTENDERS,
    REPO,
    Server,
    contender,
    ensure_onnx_export,
    free_port,
)
from bench.workloads import WORKLOADS

DEFAULT_SCENARIOS = (("mixed", 32, 1), ("short", 32, 1), ("short", 1, 1))  # the quick target
REQUEST_TIMEOUT = 30.0
WARMUP_MAX = 60.0  # past --warmup, the most a load waits for every client's first answer (bench.loadgen)
QUIET_CORES = 0.25  # machine-wide busy cores below which a measurement may start


@dataclass(frozen=True)
class Scenario:
    workload: str
    concurrency: int
    items: int


def _csv(kind: type, choices: tuple[str, ...] | None = None):
    def parse(text: str) -> list:
        values = [kind(v) for v in text.split(",") if v.strip()]
        if choices and (bad := [v for v in values if v not in choices]):
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return values

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--workloads", type=_csv(str, WORKLOADS), help="default: the quick set (mixed 32×1, short 32×1 and 1×1)"
    )
    p.add_argument("--concurrency", type=_csv(int), help="clients, e.g. 1,8,32,128 (default 32 with --workloads)")
    p.add_argument("--items-per-request", type=_csv(int), help="e.g. 1,32 (default 1)")
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per load")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each load")
    p.add_argument(
        "--contenders",
        type=_csv(str, CONTENDERS),
        default=[name for name in CONTENDERS if name not in OPT_IN_CONTENDERS],
        help="default: all but the multi-vector ones (they need a model folder with bge-m3's colbert_linear.pt) "
        "and embedserve-torch-padded (packing off)",
    )
    p.add_argument(
        "--onnx-dir",
        type=Path,
        help="`embedserve quantize` folder of the model for the ONNX contenders (default: made once in bench/.cache/)",
    )
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra embedserve CLI argument, repeatable (use --server-arg=--flag for dashes)",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for embedserve, e.g. EMBEDSERVE_MAX_WAIT_MS=5; repeatable",
    )
    p.add_argument("--model-dir", help="model folder for every contender and the ceiling (default: bundled MiniLM)")
    p.add_argument("--model-id", default="all-MiniLM-L6-v2", help="id embedserve serves it under")
    p.add_argument("--ceiling-seconds", type=float, default=10.0)
    p.add_argument("--no-ceiling", dest="ceiling", action="store_false")
    p.add_argument(
        "--ceiling-once",
        dest="ceiling_after",
        action="store_false",
        help="measure the ceiling only before the contenders, not again after them",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=4096, help="distinct texts per workload")
    p.add_argument("--ready-timeout", type=float, default=180.0)
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each measurement wait up to this many seconds for other work on the machine to stop (0: don't)",
    )
    p.add_argument("--hog", type=int, default=0, help="busy processes (a core each) beside every contender")
    p.add_argument(
        "--cpu-quota", type=float, help="run each contender in a cgroup limited to this many CPUs (e.g. 1.5)"
    )
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    return p.parse_args(argv)


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    if not (args.workloads or args.concurrency or args.items_per_request):
        return [Scenario(*s) for s in DEFAULT_SCENARIOS]
    grid = itertools.product(args.workloads or ["mixed"], args.concurrency or [32], args.items_per_request or [1])
    return [Scenario(*s) for s in grid]


def _module(module: str, **options: object) -> list[str]:
    """`python -m module --some-option value ...` for this interpreter."""
    argv = [sys.executable, "-m", module]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def _run_json(argv: list[str], timeout: float) -> dict:
    out = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **OFFLINE_ENV}
    )
    if out.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _settle(args: argparse.Namespace) -> float:
    """Wait (bounded) for the machine to go quiet, so a shared box's other work skews less; the busy cores seen."""
    if args.quiet_wait <= 0 or args.hog:  # beside a hog the machine is busy on purpose
        return 0.0
    return round(wait_quiet(QUIET_CORES, args.quiet_wait), 2)


def measure_ceiling(workload: str, args: argparse.Namespace, model_dir: str, engine: str = "torch") -> dict:
    busy = _settle(args)
    argv = _module(
        "bench.ceiling",
        workload=workload,
        model_dir=model_dir,
        seed=args.seed,
        pool=args.pool,
        seconds=args.ceiling_seconds,
        engine=engine,
    )
    return {**_run_json(argv, timeout=args.ceiling_seconds * 3 + 180), "busy_before_cores": busy}


def measure_ceilings(workloads: list[str], args: argparse.Namespace, model_dir: str, label: str) -> dict[str, dict]:
    """The run's in-process ceilings, per workload: torch's (`ceiling`), and where `embedserve` is a contender the
    default engine's own, its ONNX fp32 export (`ceiling_onnx`)."""
    found: dict[str, dict] = {"ceiling": {}, "ceiling_onnx": {}}
    for workload in workloads:
        print(f"{label}: {workload} ...", file=sys.stderr, flush=True)
        found["ceiling"][workload] = measure_ceiling(workload, args, model_dir)
        if "embedserve" in args.contenders:
            found["ceiling_onnx"][workload] = measure_ceiling(workload, args, model_dir, "onnx")
    return found


def bracketed(before: dict, after: dict) -> dict:
    """A ceiling measured before and after the contenders, as one: its figures the mean of both, so a machine's drift
    over the run moves the ceiling as it moved the contenders compared with it; both measurements are kept."""
    mean = {key: round((before[key] + after[key]) / 2, 2) for key in ("items_per_s", "single_encode_p50_ms")}
    return {**before, **mean, "before": before, "after": after}


def drive(server: Server, sc: Scenario, args: argparse.Namespace) -> dict:
    busy = _settle(args)
    argv = _module(
        "bench.loadgen",
        url=f"http://127.0.0.1:{server.port}{server.spec.embeddings_path}",
        body=server.spec.body,
        model=args.model_id,
        workload=sc.workload,
        concurrency=sc.concurrency,
        items=sc.items,
        duration=args.duration,
        warmup=args.warmup,
        warmup_max=WARMUP_MAX,
        request_timeout=REQUEST_TIMEOUT,
        seed=args.seed,
        pool=args.pool,
        server_pid=server.pid,
    )
    before = cache_counts(server.port)
    result = _run_json(argv, timeout=args.warmup + WARMUP_MAX + args.duration + REQUEST_TIMEOUT + 60)
    after = cache_counts(server.port)
    looked_up = sum(after.values()) - sum(before.values())
    hit_rate = (after["hit"] - before["hit"]) / looked_up if looked_up else None  # warm-up included
    return {**result, "busy_before_cores": busy, "rss_mb_after": server.rss_mb(), "cache_hit_rate": hit_rate}


def cache_counts(port: int) -> dict[str, float]:
    """embedserve's response-cache lookups so far, by result (zeros for a server without the metric)."""
    counts = {"hit": 0.0, "miss": 0.0}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return counts
    for result, value in re.findall(r'^embed_cache_requests_total\{[^}]*result="(hit|miss)"[^}]*\} (\S+)$', text, re.M):
        counts[result] += float(value)
    return counts


def bench_contender(name: str, plan: list[Scenario], args: argparse.Namespace, model_dir: str) -> dict:
    env = dict(kv.split("=", 1) for kv in args.server_env)
    port = free_port()
    try:
        spec = contender(name, port, args.model_id, model_dir, args.server_arg, env, args.onnx_dir)
    except (ValueError, RuntimeError) as exc:  # a peer not installed: the others still run
        print(f"  {name} skipped: {exc}", file=sys.stderr)
        return {"name": name, "argv": [], "env": {}, "runs": [], "error": str(exc)}
    record: dict = {"name": name, "argv": spec.argv, "env": spec.env, "runs": []}
    with (
        cpu_quota(args.cpu_quota, f"embedserve-bench-{os.getpid()}") as prefix,
        hog(args.hog),
        Server(replace(spec, argv=[*prefix, *spec.argv]), port) as server,
    ):
        record["log"] = server.log.name
        try:
            record["ready_s"] = round(server.wait_ready(args.ready_timeout), 2)
            for sc in plan:
                print(f"  {name}: {sc.workload} {sc.concurrency}×{sc.items} ...", file=sys.stderr, flush=True)
                record["runs"].append(drive(server, sc, args))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            record["error"] = str(exc)
            print(f"  {name} failed: {exc}", file=sys.stderr)
        record["peak_rss_mb"] = server.peak_rss_mb()
    record["exit_code"] = server.proc.returncode
    return record


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
"""The CPU features that tell this project's CPU kinds apart (one model name, "AMD EPYC", covers several)."""


def isa_flags() -> list[str]:
    """Which of ISA_FLAGS this process's CPU has (models.isa: under emulation, the emulated CPU's)."""
    from embedserve.models.isa import cpu_flags, flag_key

    have = {flag_key(flag) for flag in cpu_flags()}
    return [flag for flag in ISA_FLAGS if flag_key(flag) in have]


def cpu_model() -> str:
    """/proc/cpuinfo's model name (platform.processor() where there is none): with `isa_flags`, the CPU a figure
    was measured on."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor()
    )


def run_meta(argv: list[str] | None, program: str = "bench") -> dict:
    """What a bench result says of its run: when, the command (`python -m <program>` and its arguments), the
    machine (cores, CPU model and ISA flags), Python and the commit (marked dirty when the tree differs)."""

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True).stdout.strip()

    cpu = cpu_model()
    dirty = " (dirty)" if git("status", "--porcelain", "--untracked-files=no") else ""
    return {
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": shlex.join(["python", "-m", program, *(sys.argv[1:] if argv is None else argv)]),
        "cores": cores(),
        "cpu": cpu,
        "isa_flags": isa_flags(),
        "python": platform.python_version(),
        "git": (git("rev-parse", "--short", "HEAD") or "unknown") + dirty,
    }


def write(result: dict, out_dir: Path) -> Path:
    """`<timestamp>.json` and `.md` in out_dir, the JSON written via a .tmp file so no half file remains."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / result["meta"]["started"].replace(":", "").replace("-", "")
    tmp = stem.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(stem.with_suffix(".json"))
    stem.with_suffix(".md").write_text(report.render(result))
    return stem.with_suffix(".json")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    plan = scenarios(args)
    model_dir = args.model_dir or default_model_dir()
    result: dict = {
        "meta": run_meta(argv),
        "settings": {
            "duration": args.duration,
            "warmup": args.warmup,
            "seed": args.seed,
            "pool": args.pool,
            "model_id": args.model_id,
            "model_dir": model_dir,
            "scenarios": [vars(s) for s in plan],
        },
        "ceiling": {},
        "ceiling_onnx": {},
        "contenders": [],
    }
    if any(name in ONNX_BACKENDS for name in args.contenders):
        args.onnx_dir = ensure_onnx_export(
            model_dir, args.onnx_dir or REPO / "bench" / ".cache" / f"{args.model_id}-onnx"
        )
        result["settings"]["onnx_dir"] = str(args.onnx_dir)
    workloads = list(dict.fromkeys(s.workload for s in plan))
    if args.ceiling:
        result.update(measure_ceilings(workloads, args, model_dir, "ceiling"))
    for name in args.contenders:
        result["contenders"].append(bench_contender(name, plan, args, model_dir))
    if args.ceiling and args.ceiling_after:
        for key, table in measure_ceilings(workloads, args, model_dir, "ceiling again").items():
            result[key] = {workload: bracketed(result[key][workload], after) for workload, after in table.items()}
    path = write(result, args.out)
    try:
        from bench.plot import plot

        for png in plot(path):
            print(f"plotted {png}", file=sys.stderr)
    except ImportError:
        print("matplotlib is not installed: no plots", file=sys.stderr)
    print(report.render(result))
    print(f"wrote {path} and {path.with_suffix('.md')}", file=sys.stderr)
