"""The Prometheus scrape config and the Grafana dashboard in deploy/ match what the server exports."""

from __future__ import annotations

import json
import re

import yaml

from tests.inprocess import AppServer
from tests.support import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "embedserve-dashboard.json"
SCRAPE = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def _exported_families(server: AppServer) -> set[str]:
    text = server.http.get(f"{server.url}/metrics").text
    return {_family(line.split()[2]) for line in text.splitlines() if line.startswith("# HELP ")}


def _family(series: str) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


def test_every_metric_the_dashboard_queries_is_exported(server: AppServer) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    queried = {_family(name) for expr in exprs for name in re.findall(r"\bembed_[a-z_]+", expr)}
    assert len(queried) >= 12
    missing = queried - _exported_families(server)
    assert not missing, f"the dashboard queries metrics the server does not export: {sorted(missing)}"


def test_the_dashboard_covers_what_operators_watch() -> None:
    titles = " ".join(p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"])
    for topic in ("requests", "latency", "rejections", "queue depth", "queue wait", "batch size", "memory", "load"):
        assert topic in titles, topic


def test_the_scrape_config_scrapes_metrics() -> None:
    config = yaml.safe_load(SCRAPE.read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"]
