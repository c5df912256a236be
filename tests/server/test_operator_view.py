"""What an operator reads: `--help` that explains each option, errors in the subcommand's usage, probes
that are neither errors nor access-log lines, and the standard process and Python metrics."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator

import pytest

from embedserve.models.neighbours import neighbour_meter
from embedserve.server.cli import main
from tests.inprocess import AppServer, start_app
from tests.support import metric


def test_every_serve_option_says_what_it_does_its_default_and_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    usage, _, options = capsys.readouterr().out.partition("options:")
    blocks = {block.split()[0]: " ".join(block.split()) for block in re.split(r"\n(?=  --)", options) if block.strip()}
    declared = set(re.findall(r"\[(--[a-z-]+)", usage)) - {"--help"}
    assert declared <= set(blocks), sorted(declared - set(blocks))
    for option in declared:
        assert re.search(r"\((default: [^;]+; )?EMBEDSERVE_[A-Z_]+\)$", blocks[option]), blocks[option]
        assert len(blocks[option].split()) > 6, blocks[option]  # says what it does, not only its default
    assert blocks["--port"].endswith("(default: 8000; EMBEDSERVE_PORT)")


@pytest.mark.parametrize("command", ["serve", "quantize"])
def test_a_bad_option_shows_the_subcommands_usage(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [command, "--bogus"] if command == "serve" else [command, "x", "--out", "y", "--bogus"]
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: embedserve {command} ")
    assert f"embedserve {command}: error: unrecognized arguments: --bogus" in err


@pytest.fixture(scope="module")
def logged() -> Iterator[AppServer]:
    running = start_app(None, env={"EMBEDSERVE_ACCESS_LOG": "true"})
    yield running
    running.stop()


def test_probes_are_not_errors_nor_access_logged_while_requests_are(logged: AppServer) -> None:
    host = logged.app.state.host
    host.draining = True  # readiness says 503, as while loading or draining
    try:
        assert logged.http.get("/health/ready").status_code == 503
    finally:
        host.draining = False
    assert logged.http.get("/health/live").status_code == 200
    assert logged.http.post("/embed", json={"text": ""}).status_code == 422
    metrics = logged.http.get("/metrics").text
    assert 'embed_requests_total{model="",route="/health/ready",status="503"}' in metrics  # counted as a request
    errors = [line for line in metrics.splitlines() if line.startswith("embed_errors_total{")]
    assert not [line for line in errors if "/health" in line], errors  # but not as an error
    assert any('route="/embed",type="422"' in line for line in errors), errors
    log = logged.log()
    assert '"path":"/embed"' in log and '"path":"/health' not in log


def test_process_and_python_metrics_are_exported(server: AppServer) -> None:
    metrics = server.http.get("/metrics").text
    for family in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "python_info"):
        assert f"\n{family}" in metrics, family
    assert "python_gc_collections_total" in metrics


@pytest.mark.parametrize("crowded", [False, True])
def test_metrics_say_whether_other_processes_keep_the_cpus_busy(
    server: AppServer, monkeypatch: pytest.MonkeyPatch, crowded: bool
) -> None:
    """What the ONNX runners' pass gate asks (models/neighbours.py), so an operator can tell a noisy neighbour from a
    slow model. The meter is set here: the machine's real neighbours (another test worker) are not the test's."""
    monkeypatch.setattr(neighbour_meter(), "crowded", lambda: crowded)
    assert metric(server, "embed_cpu_neighbours_busy") == float(crowded)


def test_start_up_says_what_loads_from_where_how_long_each_step_took_and_readiness_says_what_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from embedserve.server.serving import model_host

    gate, real = threading.Event(), model_host.load_model

    def held(*args, **kwargs):  # type: ignore[no-untyped-def]
        gate.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(model_host, "load_model", held)
    app = start_app(None, ready=False)
    try:
        waiting = app.http.get("/health/ready")
        assert waiting.status_code == 503
        body = waiting.json()
        assert body["status"] == "not ready" and body["models"] == {"all-MiniLM-L6-v2": "loading"}
        loading = body["loading"]["all-MiniLM-L6-v2"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", loading["since"]) and loading["seconds"] >= 0
        gate.set()
        app.wait_ready()
        assert "loading" not in app.http.get("/health/ready").json()
        lines = [json.loads(line) for line in app.log().splitlines()]
    finally:
        gate.set()
        app.stop()
    by_message = {line["msg"]: line for line in lines}
    # backend auto: the bundled MiniLM is served from its ONNX export, made by the first start of the run (or cached)
    export = by_message.get("using the cached ONNX export") or by_message["exported to ONNX fp32"]
    assert export["model"] == "all-MiniLM-L6-v2"
    assert by_message["model loading"]["backend"] == "onnx"
    assert by_message["model loading"]["source"].startswith(os.environ["EMBEDSERVE_CACHE_DIR"])
    loaded = by_message["model loaded"]
    assert {"import_seconds", "weights_seconds", "warmup_seconds", "load_seconds", "device", "dtype"} <= set(loaded)
    assert by_message["models loaded"]["ready"] == ["all-MiniLM-L6-v2"] and by_message["models loaded"]["seconds"] > 0
