"""`python -m bench.soak`: where a server's memory goes under a long load, sampled as it runs.

Each variant (`NAME=CONTENDER[,KEY=VALUE...]`, as for bench.memory) is started fresh and driven for
`--duration` seconds; every `--every` seconds its resident memory is read and split, from
/proc/PID/smaps, into what the model files map (file-backed), glibc's main heap, other anonymous
mappings the size of a glibc thread arena (64 MiB reserved each), and the rest of the anonymous memory
(torch's large blocks, mmapped by glibc above its threshold, thread stacks). A plateau shows as the
last samples agreeing; growth shows in the column that grows.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
from pathlib import Path

from bench.memory import prepare, variant_server, variants_parser
from bench.run import Scenario, drive

ARENA_BYTES = 64 * 2**20
_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)\s*(.*)$")


def breakdown(pid: int) -> dict[str, float]:
    """RSS in MB by kind of mapping (see the module docstring)."""
    totals = {"file": 0, "heap": 0, "arenas": 0, "other_anon": 0}
    arenas = 0
    kind, size = "other_anon", 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        header = _HEADER.match(line)
        if header:
            start, end, inode, name = int(header[1], 16), int(header[2], 16), int(header[3]), header[4]
            size = end - start
            if inode:
                kind = "file"
            elif name == "[heap]":
                kind = "heap"
            elif not name and size <= ARENA_BYTES and (start % ARENA_BYTES == 0 or end % ARENA_BYTES == 0):
                kind = "arenas"  # a glibc thread arena: 64 MiB-aligned, at most 64 MiB
                arenas += start % ARENA_BYTES == 0
            else:
                kind = "other_anon"
        elif line.startswith("Rss:"):
            totals[kind] += int(line.split()[1]) * 1024
    result = {name: round(value / 2**20, 1) for name, value in totals.items()}
    result["rss"] = round(sum(totals.values()) / 2**20, 1)
    result["arena_count"] = arenas
    return result


def soak(name: str, which: str, env: dict[str, str], args: argparse.Namespace) -> dict:
    samples: list[dict] = []
    with variant_server(which, env, args) as server:
        server.wait_ready(args.ready_timeout)
        samples.append({"t": 0.0, **breakdown(server.pid)})
        done = threading.Event()

        def sample() -> None:
            t = 0.0
            while not done.wait(args.every):
                t += args.every
                samples.append({"t": t, **breakdown(server.pid)})

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        run = drive(server, Scenario(args.workload, args.concurrency, args.items), args)
        done.set()
        sampler.join()
        peak = server.peak_rss_mb()
    return {"variant": name, "env": env, "samples": samples, "peak_rss_mb": peak, "items_per_s": run["items_per_s"]}


def main(argv: list[str] | None = None) -> None:
    p = variants_parser(
        "python -m bench.soak", __doc__.splitlines()[0], concurrency=16, duration=360.0, warmup=0.0, ready_timeout=180.0
    )
    p.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = prepare(p.parse_args(argv))
    rows = [soak(*variant, args) for variant in args.variants]
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    for row in rows:
        print(f"\n{row['variant']} {row['env']}: {row['items_per_s']} items/s, peak {row['peak_rss_mb']} MB")
        print("| s | RSS MB | file | heap | arenas (count) | other anon |")
        print("|---:|---:|---:|---:|---:|---:|")
        for s in row["samples"]:
            print(
                f"| {s['t']:.0f} | {s['rss']} | {s['file']} | {s['heap']} | {s['arenas']} ({s['arena_count']}) "
                f"| {s['other_anon']} |"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
