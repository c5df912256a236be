"""The admin API: upstream endpoints listed, added and removed at run time under the admin key, and
written back to the models file (comments kept) so they survive a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.inprocess import AppServer, start_app

KEY = "admin-secret-1"
ADMIN = {"Authorization": f"Bearer {KEY}"}
MODELS = """\
# The fleet's upstreams. This comment must survive run-time changes.
models:
  - id: fleet            # a TEI pool
    kind: upstream
    protocol: tei
    endpoints:
      - http://127.255.0.1:8080
    health_check: {interval: 0}
"""


def start(folder: Path, models_file: Path) -> AppServer:
    return start_app(folder, "--models", str(models_file), env={"EMBEDSERVE_ADMIN_KEY": KEY})


@pytest.fixture
def models_file(tmp_path: Path) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(MODELS)
    return path


@pytest.fixture
def gateway(tmp_path: Path, models_file: Path) -> Iterator[AppServer]:
    running = start(tmp_path, models_file)
    yield running
    running.stop()


def endpoints(server: AppServer) -> list[str]:
    listing = server.http.get(server.url + "/v1/backends", headers=ADMIN).json()["data"]
    (fleet,) = listing
    return [e["url"] for e in fleet["endpoints"]]


def test_the_admin_api_needs_the_admin_key(gateway: AppServer) -> None:
    missing = gateway.http.get(gateway.url + "/v1/backends")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_admin_key"
    wrong = gateway.http.get(gateway.url + "/v1/backends", headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 401
    by_header = gateway.http.get(gateway.url + "/v1/backends", headers={"X-API-Key": KEY})
    assert by_header.status_code == 200


def test_without_an_admin_key_the_admin_api_is_off(tmp_path: Path, models_file: Path) -> None:
    running = start_app(tmp_path, "--models", str(models_file))
    try:
        answer = running.http.get(running.url + "/v1/backends", headers=ADMIN)
        assert answer.status_code == 403 and "EMBEDSERVE_ADMIN_KEY" in answer.json()["error"]["message"]
    finally:
        running.stop()


def test_endpoints_added_and_removed_survive_a_restart(tmp_path: Path, models_file: Path, gateway: AppServer) -> None:
    listing = gateway.http.get(gateway.url + "/v1/backends", headers=ADMIN).json()["data"][0]
    assert listing["model"] == "fleet" and listing["protocol"] == "tei"
    assert listing["endpoints"][0] | {"outstanding": 0} == {
        "url": "http://127.255.0.1:8080",
        "weight": 1,
        "healthy": True,
        "outstanding": 0,
        "consecutive_failures": 0,
        "ejections": 0,
    }

    added = gateway.http.post(
        gateway.url + "/v1/backends",
        headers=ADMIN,
        json={"model": "fleet", "url": "http://127.255.0.2:8080", "weight": 3},
    )
    assert added.status_code == 201 and added.json()["persisted"] is True
    assert endpoints(gateway) == ["http://127.255.0.1:8080", "http://127.255.0.2:8080"]
    removed = gateway.http.delete(
        gateway.url + "/v1/backends", headers=ADMIN, params={"model": "fleet", "url": "http://127.255.0.1:8080"}
    )
    assert removed.status_code == 200 and removed.json()["deleted"] is True

    text = models_file.read_text()
    assert "This comment must survive" in text and "# a TEI pool" in text
    (entry,) = yaml.safe_load(text)["models"]
    assert entry["endpoints"] == [{"url": "http://127.255.0.2:8080", "weight": 3}]
    models = {card["id"]: card for card in gateway.http.get(gateway.url + "/v1/models").json()["data"]}
    assert models["fleet"]["endpoints"] == ["http://127.255.0.2:8080"]

    gateway.stop()
    again = start(tmp_path, models_file)
    try:
        assert endpoints(again) == ["http://127.255.0.2:8080"]
    finally:
        again.stop()


@pytest.mark.parametrize(
    ("method", "body", "params", "status"),
    [
        ("POST", {"model": "nope", "url": "http://127.255.0.9:1"}, None, 404),
        ("POST", {"model": "fleet", "url": "http://127.255.0.1:8080/"}, None, 409),  # already listed
        ("POST", {"model": "fleet", "url": "ftp://x"}, None, 400),
        ("POST", {"model": "fleet"}, None, 400),
        ("DELETE", None, {"model": "fleet", "url": "http://127.255.0.7:1"}, 404),
        ("DELETE", None, {"model": "fleet", "url": "http://127.255.0.1:8080"}, 409),  # the last one
    ],
)
def test_bad_changes_are_refused_and_change_nothing(
    gateway: AppServer, models_file: Path, method: str, body: dict | None, params: dict | None, status: int
) -> None:
    answer = gateway.http.request(method, gateway.url + "/v1/backends", headers=ADMIN, json=body, params=params)
    assert answer.status_code == status, answer.text
    assert "message" in answer.json()["error"]
    assert endpoints(gateway) == ["http://127.255.0.1:8080"]
    assert models_file.read_text() == MODELS
