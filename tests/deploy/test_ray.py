"""deploy/ray: embedserve on a one-node Ray cluster with two replicas answers as a single server does.

The cluster runs on this machine (2 CPUs: one replica each, one torch thread each); requests go through Ray Serve's
HTTP proxy, concurrently, so both replicas and their own batchers take part.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.inprocess import AppServer
from tests.support import ROOT, free_port

serve = pytest.importorskip(
    "ray.serve", reason="ray[serve] is not installed: `make install` adds it (pip install -e '.[ray]')"
)
import ray  # noqa: E402

pytestmark = pytest.mark.slow  # starts a Ray cluster with two replicas

TEXTS = [
    "A man is eating food.",
    "Студенты быстро находят ответ.",
    "The giant panda is a bear native to south central China, where it lives in mountain forests. " * 6,
    "짧은 문장",
    "Where do students find answers?",
    "hello",
]


@pytest.fixture(scope="module")
def ray_url() -> Iterator[str]:
    from deploy.ray.serve_app import build

    # Replicas unpickle the deployment class by reference: they import deploy.ray.serve_app from the checkout.
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), saved]))
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build({"num_cpus": "1", "min_replicas": "2", "max_replicas": "2", "access_log": "false"})
        serve.run(app, name="embedserve", route_prefix="/", blocking=False)
        _wait_for_replicas(2)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _wait_for_replicas(count: int, timeout: float = 180) -> None:
    import time

    deadline = time.monotonic() + timeout
    states: dict = {}
    while time.monotonic() < deadline:
        app = serve.status().applications.get("embedserve")
        if app is not None:
            states = dict(app.deployments["EmbedServe"].replica_states)
            if app.status == "RUNNING" and states.get("RUNNING") == count:
                return
        time.sleep(0.5)
    raise AssertionError(f"Ray did not start {count} replicas in {timeout} s: {states}")


def _embed(url: str, inputs: list[str]) -> np.ndarray:
    response = httpx.post(f"{url}/v1/embeddings", json={"input": inputs}, timeout=120)
    assert response.status_code == 200, response.text
    return np.array([row["embedding"] for row in response.json()["data"]])


def test_two_replicas_answer_concurrent_requests_as_a_single_server(ray_url: str, server: AppServer) -> None:
    requests = [[text] for text in TEXTS] * 4 + [TEXTS, TEXTS[::-1]] * 4
    with ThreadPoolExecutor(16) as pool:
        through_ray = list(pool.map(lambda inputs: _embed(ray_url, inputs), requests))
    for inputs, got in zip(requests, through_ray):
        expected = _embed(server.listen(), inputs)
        assert got.shape == expected.shape == (len(inputs), 384)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_each_replica_serves_the_whole_app(ray_url: str) -> None:
    assert httpx.get(f"{ray_url}/health/ready").status_code == 200
    models = httpx.get(f"{ray_url}/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["all-MiniLM-L6-v2"]
    assert "embed_queue_items" in httpx.get(f"{ray_url}/metrics").text


def test_ray_leaves_the_projects_pins_intact() -> None:
    """ray[serve] brings its own dependencies into the same venv; none may conflict with ours."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
