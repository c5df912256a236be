"""What the bench needs of a peer: the load generator's body formats, and a server wrapper that counts and
stops every process a server starts."""

from __future__ import annotations

import sys
import time

import orjson

from bench.loadgen import BODY_FORMATS, build_requests
from bench.procfs import process_tree, status_kb
from bench.servers import Contender, Server, free_port


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
