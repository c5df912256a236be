"""deploy/compose.yml brought up for real (podman-compose from PyPI), with Redis and Prometheus.

The compose file is used as users use it; tests/deploy/compose.podman.yml on top only swaps in local images (no
registry is reachable: Redis and Prometheus come from Debian's packages, deploy/podman/*.Containerfile), moves the
host ports to free ones and adds a second embedserve replica. Checks: Prometheus scrapes embedserve (its `up` is 1
and embedserve's own metrics are in Prometheus), and the two replicas share one Redis rate limit: a global burst of
3 spent across both leaves the 4th request, on either, a 429. Both need the compose network's DNS (`redis`,
`embedserve` by name): right after `up` the fixture looks the names up inside the containers and, where they do not
resolve, fails at once saying so and which package the network backend lacks.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy import images
from tests.support import ROOT, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

OVERRIDE = Path(__file__).with_name("compose.podman.yml")
PROJECT = "embedserve-test"


def _wait(condition, what: str, timeout: float = 600) -> None:  # type: ignore[no-untyped-def]
    """Polls; the timeout only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, IndexError, ValueError):
            if condition():
                return
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout} s")


def _keep_health_checks_running(stop: threading.Event) -> threading.Thread:
    """Podman runs health checks from systemd timers; there is no systemd here, so the test is the timer
    (`depends_on: condition: service_healthy` waits on Redis's check)."""

    def tick() -> None:
        while not stop.wait(2):
            names = images.podman(
                "ps", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format", "{{.Names}}", check=False
            ).stdout.split()
            for name in names:
                images.podman("healthcheck", "run", name, check=False, timeout=60)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    return thread


# Who must find whom by name in the compose network: Redis from each replica (shared limits), embedserve from
# Prometheus (its scrape target, deploy/prometheus/prometheus.yml).
LOOKUPS = [("embedserve", "redis"), ("embedserve-2", "redis"), ("prometheus", "embedserve")]


def _service_container(service: str) -> str:
    names = images.podman(
        "ps",
        "--filter",
        f"label=io.podman.compose.project={PROJECT}",
        "--filter",
        f"label=com.docker.compose.service={service}",
        "--format",
        "{{.Names}}",
    ).stdout.split()
    assert names, f"no running container of the compose service {service}"
    return names[0]


def _assert_names_resolve(timeout: float = 20) -> None:
    """`getent hosts NAME` inside each container (glibc's resolver, as redis-py's getaddrinfo and the image's tools
    use): one line naming the cause where the network has no DNS, rather than a scrape that never comes up and
    limits each replica keeps to itself, minutes later."""
    deadline = time.monotonic() + timeout
    while True:
        failed = []
        for service, name in LOOKUPS:
            try:
                result = images.podman(
                    "exec", _service_container(service), "getent", "hosts", name, check=False, timeout=60
                )
            except subprocess.TimeoutExpired:
                failed.append(f"{name!r} in {service}: no answer in 60 s")
                continue
            if result.returncode != 0:  # 2: not found
                why = "not found" if result.returncode == 2 else images.error_line(result)
                failed.append(f"{name!r} in {service}: {why}")
        if not failed or time.monotonic() > deadline:
            break
        time.sleep(1)
    if failed:
        backend = images.network_backend()
        network = images.podman(
            "network", "ls", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format", "{{.Name}}"
        ).stdout.strip()
        dns = images.podman("network", "inspect", network, "--format", "{{.DNSEnabled}}", check=False).stdout.strip()
        package = images.NETWORK_DNS[backend][0] if backend in images.NETWORK_DNS else "its DNS plugin"
        raise AssertionError(
            f"container names do not resolve ({'; '.join(failed)}): no DNS in the podman network {network} "
            f"(backend {backend}, dns_enabled {dns}); the {backend} backend resolves names only with {package} "
            f"installed (apt-get install {package}), in networks made after it"
        )


@dataclass
class Stack:
    urls: dict[str, str]
    compose: Callable[..., subprocess.CompletedProcess[str]]

    def __getitem__(self, service: str) -> str:
        return self.urls[service]


@pytest.fixture(scope="module")
def compose_stack(amd64_image: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    try:
        compose = images.podman_compose()
    except images.Unavailable as error:
        pytest.skip(f"no podman-compose: {error}")
    base = images.base_image("amd64")
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(images.CONTAINERS_CONF),
        "EMBEDSERVE_IMAGE": amd64_image,
        "REDIS_IMAGE": images.build_helper_image("redis.Containerfile", "redis", base),
        "PROMETHEUS_IMAGE": images.build_helper_image("prometheus.Containerfile", "prometheus", base),
        "EMBEDSERVE_PUBLISHED_PORT": str(free_port()),
        "EMBEDSERVE_2_PUBLISHED_PORT": str(free_port()),
        "PROMETHEUS_PUBLISHED_PORT": str(free_port()),
        "GRAFANA_PUBLISHED_PORT": str(free_port()),
        "MODELS_DIR": str(tmp_path_factory.mktemp("compose-models")),
    }
    files = ["-p", PROJECT, "-f", str(ROOT / "deploy" / "compose.yml"), "-f", str(OVERRIDE)]
    services = ["redis", "embedserve", "embedserve-2", "prometheus"]

    def compose_run(*args: str, timeout: float = 900):  # type: ignore[no-untyped-def]
        return images.run([*compose, *files, *args], env=env, check=False, timeout=timeout)

    compose_run("down", "-t", "0")
    stop = threading.Event()
    _keep_health_checks_running(stop)
    start = time.monotonic()
    up = compose_run("up", "-d", "--no-build", *services)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    urls = {
        "embedserve": f"http://127.0.0.1:{env['EMBEDSERVE_PUBLISHED_PORT']}",
        "embedserve-2": f"http://127.0.0.1:{env['EMBEDSERVE_2_PUBLISHED_PORT']}",
        "prometheus": f"http://127.0.0.1:{env['PROMETHEUS_PUBLISHED_PORT']}",
        "grafana": f"http://127.0.0.1:{env['GRAFANA_PUBLISHED_PORT']}",
    }
    try:
        _assert_names_resolve()
        for name in ("embedserve", "embedserve-2"):
            _wait(
                lambda name=name: httpx.get(f"{urls[name]}/health/ready", timeout=5).status_code == 200, f"{name} ready"
            )
        images.record("compose up, both replicas ready", time.monotonic() - start)
        yield Stack(urls, compose_run)
    finally:
        stop.set()
        logs = compose_run("logs", "--tail", "30")
        print(logs.stdout[-6000:], logs.stderr[-2000:])
        down = compose_run("down", "-t", "40")
        assert down.returncode == 0, down.stderr[-3000:]


def _prometheus(url: str, query: str) -> list[dict]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_embedserve(compose_stack: Stack) -> None:
    assert httpx.get(f"{compose_stack['embedserve']}/metrics", timeout=10).status_code == 200
    _wait(
        lambda: _prometheus(compose_stack["prometheus"], 'up{job="embedserve"}')[0]["value"][1] == "1",
        "Prometheus's `up` for embedserve:8000 is 1",
        timeout=300,
    )
    # embedserve's own series, not only Prometheus's bookkeeping: the scrape parsed /metrics.
    assert _prometheus(compose_stack["prometheus"], '{job="embedserve", __name__=~"embed_.+"}')


def test_two_replicas_share_one_redis_rate_limit(compose_stack: Stack) -> None:
    body = {"input": ["shared limits"]}
    replicas = [compose_stack["embedserve"], compose_stack["embedserve-2"]]
    statuses = [httpx.post(f"{replicas[i % 2]}/v1/embeddings", json=body, timeout=60).status_code for i in range(4)]
    # a burst of 3 for the whole deployment: A, B, A pass; B's is the 4th, refused though B itself saw one request
    assert statuses == [200, 200, 200, 429], statuses
    assert httpx.post(f"{replicas[0]}/v1/embeddings", json=body, timeout=60).status_code == 429
    for url in replicas:
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert "embed_ratelimit_redis_degraded 0.0" in metrics, "both replicas talk to Redis"


def test_grafana_shows_the_dashboard_over_prometheus(compose_stack: Stack) -> None:
    """Grafana has no Debian package to build a local image from: it runs only where its image can be pulled."""
    image = yaml.safe_load((ROOT / "deploy" / "compose.yml").read_text())["services"]["grafana"]["image"]
    pull = images.podman("pull", images.qualified(image), check=False, timeout=900)
    if pull.returncode != 0:
        pytest.skip(f"Grafana not started: podman pull {images.qualified(image)}: {images.error_line(pull)}")
    up = compose_stack.compose("up", "-d", "--no-build", "grafana")
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    grafana, auth = compose_stack["grafana"], ("admin", os.environ.get("GRAFANA_ADMIN_PASSWORD", "admin"))
    _wait(lambda: httpx.get(f"{grafana}/api/health", timeout=5).status_code == 200, "Grafana healthy")
    (source,) = httpx.get(f"{grafana}/api/datasources", auth=auth, timeout=10).json()
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    found = httpx.get(f"{grafana}/api/search", params={"query": "embedserve"}, auth=auth, timeout=10).json()
    assert [hit for hit in found if hit["type"] == "dash-db"], found
    health = httpx.get(f"{grafana}/api/datasources/uid/{source['uid']}/health", auth=auth, timeout=30).json()
    assert health.get("status") == "OK", health
