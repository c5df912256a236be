""".env.example names every setting with its default, and deploy/compose.yml wires embedserve to Redis, Prometheus
and Grafana with files that exist."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from embedserve.server.config.settings import Settings
from tests.support import ROOT

DEPLOY = ROOT / "deploy"
LINE = re.compile(r"^#?(EMBEDSERVE_[A-Z0-9_]+)=(.*)$")


def _env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    listed: dict[str, str] = {}
    for index, line in enumerate(lines):
        if match := LINE.match(line):
            assert match[1] not in listed, f"{match[1]} is listed twice"
            assert lines[index - 1].startswith("# "), f"{match[1]} needs a one-line comment above it"
            listed[match[1]] = match[2]
    return listed


def test_env_example_names_every_setting_and_nothing_else() -> None:
    fields = {f"EMBEDSERVE_{name.upper()}" for name in Settings.model_fields}
    listed = set(_env_example())
    assert fields - listed == set(), "settings missing from .env.example"
    assert listed - fields == set(), ".env.example names settings that don't exist"


def test_env_example_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting every listed value changes nothing: each is the default (empty lines stand for unset ones)."""
    for name in [name for name in os.environ if name.startswith("EMBEDSERVE_")]:
        monkeypatch.delenv(name)
    defaults = Settings().model_dump()
    for name, value in _env_example().items():
        if value:
            monkeypatch.setenv(name, value)
    assert Settings().model_dump() == defaults
    unset = {name for name, value in _env_example().items() if not value}
    assert all(defaults[name.removeprefix("EMBEDSERVE_").lower()] in (None, []) for name in unset)


def test_env_example_lines_are_commented_out() -> None:
    """Copied to .env as it is, it must not override the images' own values (EMBEDSERVE_HOST=0.0.0.0)."""
    assert not [line for line in (ROOT / ".env.example").read_text().splitlines() if line.startswith("EMBEDSERVE_")]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yml").read_text())


def test_compose_builds_the_image_and_shares_rate_limits_through_redis(compose: dict) -> None:
    services = compose["services"]
    assert set(services) >= {"embedserve", "redis", "prometheus", "grafana"}
    app = services["embedserve"]
    assert (DEPLOY / app["build"]["context"] / app["build"]["dockerfile"]).is_file()
    assert re.fullmatch(r"redis://redis:6379/\d+", app["environment"]["EMBEDSERVE_REDIS_URL"])
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"
    grace = float(app["stop_grace_period"].removesuffix("s"))
    assert grace > Settings().shutdown_grace_seconds, "docker must not SIGKILL a draining server"


def test_compose_prometheus_scrapes_the_embedserve_service(compose: dict) -> None:
    (mount,) = compose["services"]["prometheus"]["volumes"]
    source, target, _ = mount.split(":")
    assert target == "/etc/prometheus/prometheus.yml"
    scrape = yaml.safe_load((DEPLOY / source).read_text())
    targets = [t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    (published,) = compose["services"]["embedserve"]["ports"]
    assert "embedserve:8000" in targets and published == "${EMBEDSERVE_PUBLISHED_PORT:-8000}:8000"


def test_compose_grafana_is_provisioned_with_the_dashboard_and_prometheus(compose: dict) -> None:
    mounts = dict(m.rsplit(":", 1)[0].split(":") for m in compose["services"]["grafana"]["volumes"])
    for source in mounts:
        assert (DEPLOY / source).exists(), source
    provisioning = DEPLOY / next(s for s, t in mounts.items() if t == "/etc/grafana/provisioning")
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "embedserve.yml").read_text())["providers"]
    dashboards = {Path(t).name for t in mounts.values() if Path(t).parent == Path(provider["options"]["path"])}
    assert dashboards == {"embedserve-dashboard.json"}
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090" and source["isDefault"]
