"""deploy/k8s: the manifests validate against Kubernetes' schemas (strict: no unknown fields), and they agree with
each other and with the server: probes on its health routes, a grace period that covers the drain, selectors that
select, and autoscaling on a queue-depth metric the server exports."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from embedserve.server.config.models_file import load_models_file
from embedserve.server.config.settings import Settings
from embedserve.server.telemetry.metrics import Metrics
from tests.support import ROOT

K8S = ROOT / "deploy" / "k8s"
MANIFESTS = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
VERSIONS = ["1.30.0", "1.37.0"]  # the oldest release still widely run, and the newest the validator knows


def _load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates(name: str, version: str) -> None:
    kubernetes_validate.validate(_load(name), version, strict=True)


def test_strict_validation_catches_a_misspelt_field() -> None:
    deployment = _load("deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_of_the_app() -> None:
    listed = set(_load("kustomization.yaml")["resources"])
    assert listed == set(MANIFESTS) - {"prometheus-adapter.yaml"}  # that one belongs to the adapter's namespace


@pytest.fixture(scope="module")
def pod() -> dict:
    return _load("deployment.yaml")["spec"]["template"]


def test_probes_use_readiness_and_liveness_routes(pod: dict) -> None:
    (container,) = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"


def test_grace_period_covers_prestop_and_drain(pod: dict) -> None:
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    drain = float(env.get("EMBEDSERVE_SHUTDOWN_GRACE_SECONDS") or Settings().shutdown_grace_seconds)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(command[1]) + drain


def test_resources_and_threads_agree(pod: dict) -> None:
    (container,) = pod["spec"]["containers"]
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    threads = next(e for e in container["env"] if e["name"] == "EMBEDSERVE_THREADS")
    # One thread per CPU the pod may use, from the limit itself (the Downward API rounds it up, as models.cpus does).
    field = threads["valueFrom"]["resourceFieldRef"]
    assert (field["containerName"], field["resource"], field["divisor"]) == (container["name"], "limits.cpu", "1")
    assert "cpu" in resources["limits"]
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the images' USER


def test_selectors_select_the_pods(pod: dict) -> None:
    labels = pod["metadata"]["labels"]
    for name, selector in [
        ("deployment.yaml", _load("deployment.yaml")["spec"]["selector"]["matchLabels"]),
        ("service.yaml", _load("service.yaml")["spec"]["selector"]),
        ("pdb.yaml", _load("pdb.yaml")["spec"]["selector"]["matchLabels"]),
    ]:
        assert selector.items() <= labels.items(), name
    target = _load("hpa.yaml")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", _load("deployment.yaml")["metadata"]["name"])


def test_hpa_scales_on_cpu_and_on_a_queue_depth_the_server_exports() -> None:
    metrics = {m["type"]: m for m in _load("hpa.yaml")["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    queue_metric = metrics["Pods"]["pods"]["metric"]["name"]
    (rule,) = yaml.safe_load(_load("prometheus-adapter.yaml")["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == queue_metric
    series = rule["seriesQuery"].split("{")[0].strip("'")
    exported = {family.name for family in Metrics().registry.collect()}
    assert series == "embed_queue_items" and series in exported


def test_models_configmap_is_a_models_file_the_server_loads(pod: dict, tmp_path: Path) -> None:
    data = _load("configmap-models.yaml")["data"]
    (tmp_path / "models.yaml").write_text(data["models.yaml"])
    assert [entry.id for entry in load_models_file(tmp_path / "models.yaml")] == ["all-MiniLM-L6-v2"]
    (container,) = pod["spec"]["containers"]
    (mount,) = container["volumeMounts"]
    models_file = next(e["value"] for e in container["env"] if e["name"] == "EMBEDSERVE_MODELS_FILE")
    assert models_file == f"{mount['mountPath']}/models.yaml"
    (volume,) = pod["spec"]["volumes"]
    assert volume["configMap"]["name"] == _load("configmap-models.yaml")["metadata"]["name"]
