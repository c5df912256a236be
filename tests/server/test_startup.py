"""Start-up fails fast, in one line and with a non-zero status, for what can be checked before loading;
a model that fails to load stops the server (status 3) unless asked to keep serving the others.
Processes of their own: the exit status is the point."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, free_port, start_server, stop_server

# Runs the CLI with some packages made unimportable, as on an install without their extra.
WITHOUT = """
import importlib.abc, sys
BLOCKED = set(sys.argv.pop(1).split(','))
class Without(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == blocked or name.startswith(blocked + '.') for blocked in BLOCKED):
            raise ImportError(f'No module named {name!r}', name=name)
sys.meta_path.insert(0, Without())
from embedserve.server.cli import main
main()
"""


def embedserve(
    *args: str, without: str = "", timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = (
        [sys.executable, "-c", WITHOUT, without, *args]
        if without
        else [sys.executable, "-m", "embedserve.server", *args]
    )
    environment = {**os.environ, **(env or {})}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=environment)


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_a_missing_model_folder_is_one_line_and_status_1() -> None:
    result = embedserve("serve", "--model", "/does/not/exist", "--port", "0")
    assert result.returncode == 1
    assert result.stderr.strip() == "embedserve: configuration error: model 'exist': /does/not/exist does not exist"


def test_a_port_in_use_fails_before_any_model_loads() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = embedserve("serve", "--port", str(port))
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"embedserve: configuration error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "model loaded" not in result.stderr


def test_a_torch_free_install_names_the_extra_the_default_model_needs() -> None:
    result = embedserve("serve", "--port", "0", without="torch,transformers,sentence_transformers")
    assert result.returncode == 1
    assert (
        "model 'all-MiniLM-L6-v2' runs on torch, but torch, transformers, sentence-transformers is not installed"
        in result.stderr
    )
    assert "pip install 'embedserve[torch]'" in result.stderr and "Traceback" not in result.stderr


def test_a_model_that_fails_to_load_stops_the_server_with_status_3(tmp_path: Path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    result = embedserve("serve", "--model", str(empty), "--port", str(free_port()))
    assert result.returncode == 3, result.stderr[-2000:]
    assert last_line(result).startswith("embedserve: model 'empty-model' failed to load: ")
    assert "--keep-serving-failed-models" in last_line(result)
    assert "Traceback" not in result.stderr


def test_keep_serving_failed_models_serves_the_others(tmp_path: Path, minilm_dir: str) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    server = start_server(
        tmp_path, "--model", f"good={minilm_dir}", "--model", str(empty), "--keep-serving-failed-models", ready=False
    )
    try:
        server.wait_until(lambda: server.http.get("/v1/models").json()["data"][1]["status"] == "failed")
        assert server.http.post("/v1/embeddings", json={"model": "good", "input": "hi"}).status_code == 200
        broken = server.http.post("/v1/embeddings", json={"model": "empty-model", "input": "hi"})
        assert broken.status_code == 503 and "failed to load" in broken.json()["error"]["message"]
        assert server.http.get("/health/ready").status_code == 503
    finally:
        stop_server(server)


def test_quantize_without_its_extra_names_the_extra(tmp_path: Path) -> None:
    result = embedserve("quantize", "some/model", "--out", str(tmp_path / "out"), without="optimum")
    assert result.returncode == 2
    assert "embedserve quantize needs the quantize extra" in result.stderr
    assert "pip install 'embedserve[quantize]'" in result.stderr and "Traceback" not in result.stderr


def test_tracing_asked_for_without_its_extra_names_the_extra() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    result = embedserve("serve", "--port", "0", without="opentelemetry.exporter", env=env)
    assert result.returncode == 1
    assert "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry's OTLP exporter is not installed" in result.stderr
    assert "pip install 'embedserve[tracing]'" in result.stderr


def test_once_its_models_are_in_the_server_freezes_them_for_the_garbage_collector(
    tmp_path: Path, minilm_dir: str
) -> None:
    models = tmp_path / "models.yaml"  # torch: what is frozen is mostly torch's own objects
    models.write_text(f"models:\n  - id: m\n    source: {minilm_dir}\n    backend: torch\n")
    server = start_server(tmp_path, "--models", str(models))
    try:
        server.wait_until(lambda: "objects frozen for the collector" in server.log())
    finally:
        stop_server(server)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    messages = [line["msg"] for line in lines]
    frozen = lines[messages.index("objects frozen for the collector")]
    # torch and the model are hundreds of thousands of objects that full collections no longer walk
    assert frozen["objects"] > 100_000
    assert messages.index("models loaded") < messages.index("objects frozen for the collector")
