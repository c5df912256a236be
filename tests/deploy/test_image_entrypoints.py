"""Each image's entrypoint serves from a fresh virtual environment built by that image's own build steps.

No Docker engine runs here, so the test does what the builder stage does, line for line: it runs the builder's
RUN instructions from the repository root with /opt/venv moved to a temporary folder, then starts the final
stage's ENTRYPOINT with the final stage's ENV (/models, too, moved), as the container would. It checks
/health/ready, the image's HEALTHCHECK command, one /v1/embeddings, and that SIGTERM drains it to exit 0.

One change to the build: the amd64 torch line installs through this machine's pip configuration instead of
PyTorch's index (not reachable here), which finds the same CPU build of torch 2.13.0 on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.deploy.dockerfile import Stage, parse
from tests.support import ROOT, cosine_rows, free_port

pytestmark = pytest.mark.slow  # builds each image's virtualenv (torch included) from scratch: minutes

TEXTS = ["A man is eating food.", "Студенты быстро находят ответ."]


def _build_venv(dockerfile: Path, venv: Path) -> Stage:
    """Runs the builder stage's RUN lines; returns the final stage."""
    builder, final = parse(dockerfile)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{venv}/bin:{os.environ['PATH']}"
    for run in builder.args("RUN"):
        command = run.replace("/opt/venv", str(venv)).replace(' --index-url "$TORCH_INDEX"', "")
        result = subprocess.run(
            ["bash", "-euc", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    return final


def _container_env(final: Stage, venv: Path, root: Path, port: int) -> dict[str, str]:
    moved = {"/opt/venv": str(venv), "/models": str(root / "models"), "/home/embedserve": str(root / "home")}
    env = {"HOME": str(root / "home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for key, value in final.env().items():
        for old, new in moved.items():
            value = value.replace(old, new)
        env[key] = value.replace("$PATH", os.environ["PATH"])
    return {**env, "EMBEDSERVE_HOST": "127.0.0.1", "EMBEDSERVE_PORT": str(port)}


def _serve(final: Stage, venv: Path, root: Path) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    """The ENTRYPOINT, started as the container starts it; waits for /health/ready."""
    port = free_port()
    env = _container_env(final, venv, root, port)
    program, *args = final.exec_form("ENTRYPOINT")
    (root / "home").mkdir(exist_ok=True)
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server writes to it until stopped
    process = subprocess.Popen([str(venv / "bin" / program), *args], cwd=root / "home", env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, (root / "server.log").read_text()
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return process, url, env
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"not ready in 120 s:\n{(root / 'server.log').read_text()}")


def _healthcheck(final: Stage, env: dict[str, str]) -> int:
    (line,) = final.args("HEALTHCHECK")
    command = json.loads(line.split(" CMD ", 1)[1])
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode


def _embed(url: str) -> tuple[str, np.ndarray]:
    response = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["model"], np.array([row["embedding"] for row in body["data"]])


def _stop_with_sigterm(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()


def _has_module(venv: Path, module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec('{module}') is None)"
    return subprocess.run([str(venv / "bin" / "python"), "-c", probe], timeout=60).returncode == 0


@pytest.mark.timeout(900)
def test_amd64_entrypoint_serves_the_bundled_minilm(tmp_path: Path, reference_model) -> None:  # type: ignore[no-untyped-def]
    venv = tmp_path / "venv"
    final = _build_venv(ROOT / "Dockerfile", venv)
    process, url, env = _serve(final, venv, tmp_path)
    try:
        assert _healthcheck(final, env) == 0
        model, vectors = _embed(url)
        assert model == "all-MiniLM-L6-v2"
        assert cosine_rows(vectors, reference_model.encode(TEXTS)).min() > 0.9999
    finally:
        assert _stop_with_sigterm(process) == 0, (tmp_path / "server.log").read_text()[-3000:]
    assert _healthcheck(final, env) != 0, "the health check fails once nothing answers"


@pytest.fixture(scope="module")
def int8_folder(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    """What a user mounts: `embedserve quantize ... --target arm64` output (the tiny model is forced: its random
    weights fall below the accuracy threshold)."""
    out = tmp_path_factory.mktemp("models") / "minilm-int8"
    command = [str(Path(sys.executable).parent / "embedserve"), "quantize", str(tiny_bert_dir), "--out", str(out)]
    command += ["--target", "arm64", "--force", "--bench-seconds", "0", "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.timeout(900)
def test_arm64_entrypoint_serves_an_int8_folder_without_torch(tmp_path: Path, int8_folder: Path) -> None:
    venv = tmp_path / "venv"
    final = _build_venv(ROOT / "Dockerfile.arm64", venv)
    assert not _has_module(venv, "torch") and not _has_module(venv, "sentence_transformers")
    assert _has_module(venv, "onnxruntime")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "minilm-int8").symlink_to(int8_folder)  # where EMBEDSERVE_MODELS points in the image
    process, url, env = _serve(final, venv, tmp_path)
    try:
        assert _healthcheck(final, env) == 0
        card = httpx.get(f"{url}/v1/models").json()["data"][0]
        assert (card["id"], card["backend"]) == ("minilm-int8", "onnx-int8")
        model, vectors = _embed(url)
        assert model == "minilm-int8" and vectors.shape[0] == len(TEXTS)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    finally:
        assert _stop_with_sigterm(process) == 0, (tmp_path / "server.log").read_text()[-3000:]
