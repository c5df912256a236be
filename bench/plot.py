"""PNG plots of a bench run: items/s and p99 latency against concurrency, one line per contender.

`python -m bench.plot bench/results/RUN.json` writes RUN-<workload>-<items>.png next to the JSON
(the bench runs it itself after each run when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def plot(result_path: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = json.loads(result_path.read_text())
    # (workload, items) -> contender -> [(concurrency, items/s, p99 ms)]
    series: dict[tuple[str, int], dict[str, list[tuple[int, float, float]]]] = defaultdict(lambda: defaultdict(list))
    for contender in result["contenders"]:
        for run in contender["runs"]:
            p99 = (run.get("latency_ms") or {}).get("p99") or float("nan")
            key = (run["workload"], run["items_per_request"])
            series[key][contender["name"]].append((run["concurrency"], run["items_per_s"], p99))
    written = []
    for (workload, items), by_contender in series.items():
        if max(len(points) for points in by_contender.values()) < 2:
            continue  # one concurrency: nothing to draw a line through
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for name, points in sorted(by_contender.items()):
            points.sort()
            xs = [p[0] for p in points]
            left.plot(xs, [p[1] for p in points], marker="o", label=name)
            right.plot(xs, [p[2] for p in points], marker="o", label=name)
        ceiling = result.get("ceiling", {}).get(workload)
        if ceiling:
            left.axhline(ceiling["items_per_s"], color="grey", linestyle="--", label="in-process ceiling")
        for ax, label in ((left, "items/s"), (right, "p99 latency, ms")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        if any(p[2] > 0 for points in by_contender.values() for p in points):  # NaN > 0 is False
            right.set_yscale("log")  # not when no request was answered: there is nothing to scale
        left.legend(fontsize=8)
        fig.suptitle(
            f"{workload}, {items} text(s) per request — {result['meta']['cpu']}, {result['meta']['cores']} cores"
        )
        fig.tight_layout()
        out = result_path.with_name(f"{result_path.stem}-{workload}-{items}.png")
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__.splitlines()[0])
    p.add_argument("result", type=Path, help="a bench/results/*.json file")
    for path in plot(p.parse_args(argv).result):
        print(path)


if __name__ == "__main__":
    main()
