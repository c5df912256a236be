"""An INT8 folder never serves below its gate, silently, on a CPU other than the one it was built for.

A folder with 8-bit weights (`--target avx512_vnni` or `arm64`) is exact only where the u8 x s8 kernels accumulate
in 32 bits; x86 without VNNI saturates them (`models.isa`). Such a load is refused there in one line naming both
ISAs and the command that fixes it, unless the operator says `int8_any_cpu`, which serves it with a warning. A
7-bit folder (`--target portable`, the default, or `avx2`) serves everywhere. The CPU is set here, not read: every case runs on any host
(the real thing runs under qemu as an AVX2 CPU in tests/quantize/test_targets.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedserve.models.isa import Isa
from tests.inprocess import AppServer, start_app


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> dict[str, Path]:
    """The tiny BERT quantized for both kinds of weights (random weights: forced past the gate)."""
    from embedserve.quantize import quantize_model
    from embedserve.quantize.build import Options

    root = tmp_path_factory.mktemp("int8-targets")
    made = {}
    for target in ("avx512_vnni", "portable"):
        outcome = quantize_model(
            tiny_bert_dir, root / target, Options(target=target, force=True, bench_seconds=0, progress=False)
        )
        assert outcome.written
        made[target] = outcome.out
    return made


@pytest.fixture
def on_cpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    def set_cpu(isa: Isa) -> None:
        monkeypatch.setattr("embedserve.models.onnx_runner.host_isa", lambda: isa)

    yield set_cpu


def _serve(folder: Path, env: dict[str, str] | None = None) -> AppServer:
    return start_app(None, "--model", f"tiny-int8={folder}", "--keep-serving-failed-models", env=env, ready=False)


def _status(server: AppServer) -> str:
    """The model's status once its load has ended (the deadline only turns a hang into a failure)."""
    deadline = time.monotonic() + 120
    while (status := server.http.get("/v1/models").json()["data"][0]["status"]) not in ("loaded", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return status


def test_an_8_bit_folder_is_refused_on_a_cpu_without_vnni_in_one_line(folders: dict[str, Path], on_cpu) -> None:  # type: ignore[no-untyped-def]
    on_cpu("avx2")
    server = _serve(folders["avx512_vnni"])
    try:
        assert _status(server) == "failed"
        answer = server.http.post("/v1/embeddings", json={"model": "tiny-int8", "input": "hi"})
        assert answer.status_code == 503
        message = answer.json()["error"]["message"]
        assert "\n" not in message
        assert "quantized for avx512_vnni (8-bit weights" in message and "this CPU is avx2" in message
        assert (
            "embedserve quantize SOURCE --target portable --out DIR" in message
            and "EMBEDSERVE_INT8_ANY_CPU=1" in message
        )
    finally:
        server.stop()


def test_the_operator_can_serve_it_anyway_and_is_warned(folders: dict[str, Path], on_cpu) -> None:  # type: ignore[no-untyped-def]
    on_cpu("avx2")
    server = _serve(folders["avx512_vnni"], env={"EMBEDSERVE_INT8_ANY_CPU": "1"})
    try:
        assert _status(server) == "loaded"
        assert server.http.post("/v1/embeddings", json={"model": "tiny-int8", "input": "hi"}).status_code == 200
        warning = [json.loads(line) for line in server.log().splitlines() if "int8_any_cpu" in line]
        assert len(warning) == 1 and warning[0]["level"] == "warning", server.log()
        assert "quantized for avx512_vnni" in warning[0]["msg"] and "this CPU is avx2" in warning[0]["msg"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("target", "cpu"),
    [
        ("portable", "avx2"),
        ("portable", "avx512_vnni"),
        ("portable", "arm64"),
        ("avx512_vnni", "avx512_vnni"),
        ("avx512_vnni", "arm64"),
    ],
)
def test_a_folder_serves_without_a_word_where_its_cpu_computes_it_exactly(
    folders: dict[str, Path], on_cpu, target: str, cpu: Isa
) -> None:  # type: ignore[no-untyped-def]
    on_cpu(cpu)
    server = _serve(folders[target])
    try:
        assert _status(server) == "loaded"
        assert server.http.post("/v1/embeddings", json={"model": "tiny-int8", "input": "hi"}).status_code == 200
        assert "int8_any_cpu" not in server.log()
    finally:
        server.stop()
