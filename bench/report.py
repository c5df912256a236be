"""Render a bench run (the JSON written by bench.run) as Markdown tables."""

from __future__ import annotations


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ceiling_table(ceiling: dict[str, dict], onnx: dict[str, dict] | None = None) -> list[str]:
    """The torch ceiling (what "of ceiling" divides by) and, where measured, the default engine's: its ONNX fp32
    export in-process. A ceiling measured before and after the contenders shows the mean and both."""
    lines = [
        "| workload | engine | ceiling items/s | before / after the contenders | single encode p50 ms |",
        "|---|---|---:|---:|---:|",
    ]
    for engine, table in (("torch", ceiling), ("onnx fp32", onnx or {})):
        for workload, c in table.items():
            both = "-"  # runs before 2026-12-05 afternoon, and --ceiling-once: measured before only
            if "after" in c:
                both = f"{_fmt(c['before']['items_per_s'])} / {_fmt(c['after']['items_per_s'])}"
            lines.append(
                f"| {workload} | {engine} | {_fmt(c['items_per_s'])} | {both} | {_fmt(c['single_encode_p50_ms'], 2)} |"
            )
    return lines


def _run_row(name: str, run: dict, ceiling: dict[str, dict], peak_rss: float | None) -> str:
    c = ceiling.get(run["workload"])
    share = f"{run['items_per_s'] / c['items_per_s']:.0%}" if c else "-"
    lat = run["latency_ms"] or {}
    over_single = "-"
    if c and lat and run["concurrency"] == 1 and run["items_per_request"] == 1:
        over_single = f"{lat['p50'] - c['single_encode_p50_ms']:+.2f}"
    errors = ", ".join(f"{k}: {v}" for k, v in run["errors"].items()) or "0"
    return (
        f"| {name} | {run['workload']} | {run['concurrency']} × {run['items_per_request']} "
        f"| {_fmt(run['items_per_s'])} | {share} | {_fmt(run['requests_per_s'])} "
        f"| {_fmt(lat.get('p50'), 2)} | {_fmt(lat.get('p99'), 2)} | {over_single} | {errors} "
        f"| {_fmt(run['server_cpu_cores'], 2)} / {_fmt(run['loadgen_cpu_fraction'], 2)} "
        f"/ {_fmt(run['other_cpu_cores'], 2)} | {_fmt(peak_rss, 0)} |"
    )


AUTO_SINCE = "2026-12-04T14:00:00Z"
"""From then on `embedserve` with no backend named serves ONNX fp32 (backend auto); `embedserve-torch` is torch."""


ONNX_FP32_SERVED = ("embedserve", "embedserve-padded", "embedserve-cached", "embedserve-onnx")
"""Contenders that serve the ONNX fp32 graph (all but `embedserve-onnx` by backend auto, since AUTO_SINCE): their `of ceiling`
and `p50 − single` are against the ONNX ceiling where the run measured it, the other rows' against torch's."""


def _ceiling_for(name: str, result: dict) -> dict[str, dict]:
    onnx = result.get("ceiling_onnx") or {}
    auto = name != "embedserve-onnx" and result["meta"]["started"] < AUTO_SINCE
    return onnx if onnx and name in ONNX_FP32_SERVED and not auto else result["ceiling"]


def _torch_server(contenders: list[dict], started: str) -> dict | None:
    """The run's torch server: `embedserve-torch`, or `embedserve` in a run from before backend auto."""
    ok = {c["name"]: c for c in contenders if not c.get("error")}
    return ok.get("embedserve-torch") or (ok.get("embedserve") if started < AUTO_SINCE else None)


def _vs_torch(contenders: list[dict], started: str) -> list[str]:
    """Each of our other engines against the torch server of the same run: peak RSS and items/s ratios."""
    torch = _torch_server(contenders, started)
    others = [
        c
        for c in contenders
        if c is not torch
        and not c.get("error")
        and (c["name"].startswith("embedserve-onnx") or c["name"] == "embedserve")
    ]
    if torch is None or not others:
        return []
    lines = [
        f"Against the torch server (`{torch['name']}`), same run:",
        "",
        "| contender | peak RSS ÷ torch | workload | clients × items | items/s ÷ torch |",
        "|---|---:|---|---|---:|",
    ]
    torch_runs = {(r["workload"], r["concurrency"], r["items_per_request"]): r for r in torch["runs"]}
    for c in others:
        rss = (
            f"{c['peak_rss_mb'] / torch['peak_rss_mb']:.2f}× ({c['peak_rss_mb']:.0f} / {torch['peak_rss_mb']:.0f} MB)"
            if c.get("peak_rss_mb") and torch.get("peak_rss_mb")
            else "-"
        )
        for run in c["runs"]:
            base = torch_runs.get((run["workload"], run["concurrency"], run["items_per_request"]))
            speed = f"{run['items_per_s'] / base['items_per_s']:.2f}×" if base and base["items_per_s"] else "-"
            lines.append(
                f"| {c['name']} | {rss} | {run['workload']} | {run['concurrency']} × {run['items_per_request']} | {speed} |"
            )
    return [*lines, ""]


def _is_ours(name: str) -> bool:
    return name.startswith("embedserve") and name != "embedserve-cached"  # the cache is not a contender's engine


def _is_peer(name: str) -> bool:
    return not name.startswith("embedserve") and name != "naive"


def _vs_best_peer(contenders: list[dict]) -> list[str]:
    """Per load, the fastest embedserve contender against the fastest peer of the same run: items/s, p99."""
    ok = [c for c in contenders if not c.get("error")]
    ours, peers = [c for c in ok if _is_ours(c["name"])], [c for c in ok if _is_peer(c["name"])]
    if not ours or not peers:
        return []

    def best(group: list[dict], key: tuple) -> tuple[str, dict] | None:
        runs = [(c["name"], r) for c in group for r in c["runs"] if _key(r) == key]
        return max(runs, key=lambda pair: pair[1]["items_per_s"], default=None)

    lines = [
        "Fastest embedserve contender against the fastest peer, per load (same run):",
        "",
        "| workload | clients × items | embedserve | items/s | p99 ms | peer | items/s | p99 ms | ÷ peer |",
        "|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    keys = list(dict.fromkeys(_key(r) for c in ours for r in c["runs"]))
    for key in keys:
        mine, theirs = best(ours, key), best(peers, key)
        if mine is None or theirs is None:
            continue
        (name, run), (peer, other) = mine, theirs
        ratio = f"{run['items_per_s'] / other['items_per_s']:.2f}×" if other["items_per_s"] else "∞"
        p99 = (run["latency_ms"] or {}).get("p99"), (other["latency_ms"] or {}).get("p99")
        lines.append(
            f"| {key[0]} | {key[1]} × {key[2]} | {name} | {_fmt(run['items_per_s'])} | {_fmt(p99[0], 1)} "
            f"| {peer} | {_fmt(other['items_per_s'])} | {_fmt(p99[1], 1)} | {ratio} |"
        )
    return [*lines, ""]


def _key(run: dict) -> tuple[str, int, int]:
    return run["workload"], run["concurrency"], run["items_per_request"]


def render(result: dict) -> str:
    meta = result["meta"]
    s = result["settings"]
    cpu = meta["cpu"] + (f"; {' '.join(meta['isa_flags'])}" if meta.get("isa_flags") else "")  # older runs: none
    lines = [
        f"# bench run {meta['started']}",
        "",
        f"`{meta['command']}`  ",
        f"{meta['cores']} cores ({cpu}), commit {meta['git']}, python {meta['python']}, "
        f"{s['duration']:g} s measured after {s['warmup']:g} s warm-up per run, seed {s['seed']}",
        "",
    ]
    if result["ceiling"]:
        lines += [
            "In-process ceiling (no server): torch is SentenceTransformer.encode, onnx fp32 our ONNX runner on the export:",
            "",
            *_ceiling_table(result["ceiling"], result.get("ceiling_onnx")),
            "",
        ]
        if result.get("ceiling_onnx"):
            lines += [
                f"`of ceiling` and `p50 − single`: against the onnx fp32 ceiling for {', '.join(ONNX_FP32_SERVED)}, "
                "against torch's for the rest.",
                "",
            ]
    lines += [
        "| contender | workload | clients × items | items/s | of ceiling | req/s | p50 ms | p99 ms "
        "| p50 − single ms | errors | CPU cores: server / loadgen / other | peak RSS MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    notes = []
    for contender in result["contenders"]:
        if contender.get("error"):
            log = f" (log: {contender['log']})" if contender.get("log") else ""
            notes.append(f"- {contender['name']}: {contender['error'].splitlines()[0]}{log}")
            continue
        for run in contender["runs"]:
            lines.append(
                _run_row(contender["name"], run, _ceiling_for(contender["name"], result), contender["peak_rss_mb"])
            )
        notes.append(
            f"- {contender['name']}: ready in {contender['ready_s']:.1f} s; `{' '.join(contender['argv'][1:])}`"
            + (f" env {contender['env']}" if contender["env"] else "")
        )
    contenders = result["contenders"]
    return "\n".join([*lines, "", *_vs_torch(contenders, meta["started"]), *_vs_best_peer(contenders), *notes, ""])
