"""The bench's peers (LitServe, BentoML, Infinity's ONNX engine), each from its own venv: started as the bench
starts them, they answer the model's own embeddings in the shape the load generator sends and counts.

The peer tests are in the slow tier (each makes its venv on demand, minutes, and starts a real server); the
load generator's body formats and the server wrapper's stop are checked in the fast tier."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import numpy as np
import orjson
import pytest

from bench.loadgen import BODY_FORMATS, build_requests
from bench.procfs import process_tree, status_kb
from bench.servers import REPO, Contender, Server, contender, free_port
from tests.support import cosine_rows

# Each peer's venv, as a Makefile target of its own (`make bench-peers` makes them all).
STAMPS = {
    "litserve": "bench/.venv-litserve/.installed",
    "bentoml": "bench/.venv-bentoml/.installed",
    "infinity-onnx": "bench/.venv-infinity/.installed-onnx",
}
TEXTS = ["How do embeddings work?", "a longer passage about the weather in the mountains " * 8]


def ensure_venv(peer: str) -> None:
    """Makes the peer's venv if missing; skips, saying why, only if that fails."""
    if (REPO / STAMPS[peer]).exists():
        return
    try:
        done = subprocess.run(["make", STAMPS[peer]], cwd=REPO, capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{peer} could not be installed within 20 minutes")
    if done.returncode != 0:
        pytest.skip(f"{peer} could not be installed: {done.stderr[-600:]}")


def vectors(body_format: str, answer: object) -> np.ndarray:
    """The vectors of an answer in either body format."""
    if body_format == "openai":
        return np.array([item["embedding"] for item in answer["data"]])  # type: ignore[index]
    return np.array(answer)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # a cold venv (torch, the peer, its dependencies) takes minutes to make
@pytest.mark.parametrize("peer", list(STAMPS))
def test_peer_answers_the_models_own_embeddings(peer: str, minilm_dir: str, reference_model) -> None:  # type: ignore[no-untyped-def]
    ensure_venv(peer)
    port = free_port()
    spec = contender(peer, port, "all-MiniLM-L6-v2", minilm_dir, [], {})
    expected = reference_model.encode(TEXTS, normalize_embeddings=True)
    with Server(spec, port) as server:
        server.wait_ready(timeout=300)
        family = process_tree(server.pid)
        for text, want in zip(TEXTS, expected):
            payload = BODY_FORMATS[spec.body].encode("all-MiniLM-L6-v2", [text])
            answer = httpx.post(
                f"http://127.0.0.1:{port}{spec.embeddings_path}",
                content=payload,
                headers={"content-type": "application/json"},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
            assert BODY_FORMATS[spec.body].count(answer.content) == 1
            got = vectors(spec.body, answer.json())
            assert got.shape == (1, 384)
            assert cosine_rows(got, want[None, :]).min() > 0.999
    assert not [pid for pid in family if _running(pid)], f"{peer} left processes behind: {server.log_tail()}"


def test_body_formats_say_what_each_route_takes_and_count_its_vectors() -> None:
    openai = orjson.loads(BODY_FORMATS["openai"].encode("m", ["one"]))
    assert openai == {"model": "m", "input": "one"}
    assert orjson.loads(BODY_FORMATS["openai"].encode("m", ["a", "b"]))["input"] == ["a", "b"]
    assert orjson.loads(BODY_FORMATS["sentences"].encode("m", ["one"])) == {"sentences": ["one"]}

    data = [{"object": "embedding", "index": i, "embedding": [0.1, -2e-05]} for i in range(3)]
    assert BODY_FORMATS["openai"].count(orjson.dumps({"object": "list", "data": data})) == 3
    assert BODY_FORMATS["sentences"].count(orjson.dumps([[0.1, -2e-05]] * 3)) == 3
    assert BODY_FORMATS["sentences"].count(b"[]") == 0

    (request,) = build_requests("127.0.0.1", 3000, "/encode", "m", ["a", "b"], 2, body="sentences")
    head, body = request.split(b"\r\n\r\n")
    assert head.startswith(b"POST /encode HTTP/1.1") and orjson.loads(body) == {"sentences": ["a", "b"]}
    assert Contender("x", ["true"]).body == "openai"


def test_stopping_a_server_stops_the_processes_it_started() -> None:
    """A server whose SIGTERM leaves its children running (as LitServe's does) leaves none behind the bench."""
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "time.sleep(60)\n"
    )
    with Server(Contender("forks", [sys.executable, "-c", script]), free_port()) as server:
        deadline = time.monotonic() + 10
        while len(family := process_tree(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(family) == 2
        parent_only = status_kb(server.pid, "VmRSS") / 1024  # type: ignore[operator]
        assert server.rss_mb() > parent_only + 4  # the child's resident memory counts too
    assert not [pid for pid in family if _running(pid)]


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False
