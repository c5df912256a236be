"""Benchmarks for embedserve: a lean closed-loop load generator, a naive-server contender and the
in-process ceiling, driven by `python -m bench` (see bench/README.md)."""
