"""Failover between two real upstream servers under steady load: one is killed mid-run, no accepted
request is lost, the dead endpoint is ejected, and re-admitted once it is back."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import yaml

from tests.inprocess import start_app
from tests.support import RunningServer, free_port, start_server, stop_server

CLIENTS = 6


def gauge(metrics: str, name: str, model: str, endpoint: str) -> float:
    found = re.search(rf'^{name}{{endpoint="{re.escape(endpoint)}",model="{model}"}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


def calls(metrics: str, endpoint: str, outcome: str = "ok") -> float:
    pattern = (
        rf'^embed_upstream_calls_total{{endpoint="{re.escape(endpoint)}",model="fleet",outcome="{outcome}"}} (\S+)$'
    )
    found = re.search(pattern, metrics, re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_dead_endpoint_loses_no_request_and_comes_back(tmp_path: Path, minilm_dir: str) -> None:
    port_a = free_port()
    a = start_server(tmp_path, "--model", f"minilm={minilm_dir}", port=port_a)
    b = start_app(tmp_path, "--model", f"minilm={minilm_dir}")  # in-process, on a socket of its own
    models_file = tmp_path / "gateway.yaml"
    entry = {
        "id": "fleet",
        "kind": "upstream",
        "protocol": "openai",
        "upstream_model": "minilm",
        "endpoints": [a.url, b.listen()],
        "retries": 2,
        "eject_after": 2,
        "health_check": {"interval": 0.5, "path": "/health/ready"},
    }
    models_file.write_text(yaml.safe_dump({"models": [entry]}))
    gateway = start_app(tmp_path, "--models", str(models_file))
    statuses: list[int] = []
    stop = asyncio.Event()

    async def until(condition, what: str) -> str:  # type: ignore[no-untyped-def]
        """Polls the gateway's metrics until `condition(metrics)`; the deadline only turns a hang into a failure."""
        deadline = time.monotonic() + 120
        while not condition(metrics := (await http.get("/metrics")).text):
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.1)
        return metrics

    async def client(http: httpx.AsyncClient, n: int) -> None:
        i = 0
        while not stop.is_set():
            answer = await http.post("/v1/embeddings", json={"model": "fleet", "input": f"client {n} text {i}"})
            statuses.append(answer.status_code)
            i += 1

    restarted: RunningServer | None = None
    try:
        async with gateway.async_http(timeout=60) as http:
            load = [asyncio.create_task(client(http, n)) for n in range(CLIENTS)]
            await until(lambda m: calls(m, a.url) >= 3 and calls(m, b.listen()) >= 3, "no traffic reached both")
            served_before_kill = len(statuses)
            a.process.kill()  # mid-run, with requests in flight to it
            metrics = await until(
                lambda m: gauge(m, "embed_upstream_endpoint_healthy", "fleet", a.url) == 0, "the dead one stayed in"
            )
            assert gauge(metrics, "embed_upstream_ejections_total", "fleet", a.url) >= 1
            ok_a_while_down = calls(metrics, a.url)
            served_while_down = len(statuses)
            await until(lambda m: len(statuses) >= served_while_down + 2 * CLIENTS, "no requests served meanwhile")

            restarted = await asyncio.to_thread(start_server, tmp_path, "--model", f"minilm={minilm_dir}", port=port_a)
            await until(
                lambda m: gauge(m, "embed_upstream_endpoint_healthy", "fleet", a.url) == 1,
                "the restarted endpoint was not re-admitted",
            )
            metrics = await until(lambda m: calls(m, a.url) > ok_a_while_down, "no traffic reached it again")
            stop.set()
            await asyncio.gather(*load)
            metrics = (await http.get("/metrics")).text
    finally:
        gateway.stop()
        b.stop()
        if restarted is not None:
            stop_server(restarted)
        a.process.kill()

    assert served_before_kill > 0
    assert statuses and set(statuses) == {200}, f"{len(statuses)} requests, statuses {sorted(set(statuses))}"
    assert calls(metrics, a.url) > ok_a_while_down  # traffic reaches it again
