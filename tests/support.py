"""Helpers for tests: real servers on loopback ports, vector comparisons."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def until(condition: Callable[[], bool], what: str, timeout: float = 60.0, poll: float = 0.02) -> None:
    """Polls `condition` every `poll` seconds; the timeout only turns a hang into a failure that says `what`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(poll)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    """A server process: `url`, `http` (a client of it, like `tests.inprocess.AppServer`'s), `log()`."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @functools.cached_property
    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until(self, condition: Callable[[], bool], timeout: float = 120) -> None:
        """Polls `condition`; the timeout only turns a hang into a failure."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"the server exited:\n{self.log()[-3000:]}"
            assert time.monotonic() < deadline, f"not so within {timeout} s:\n{self.log()[-3000:]}"
            time.sleep(0.1)


def start_server(
    tmp_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    launcher: list[str] | None = None,
    port: int | None = None,
    ready: bool = True,
) -> RunningServer:
    """Starts `python -m embedserve.server serve` (or `launcher serve`) on a free port (or `port`) and waits until
    /health/ready says 200 (with `ready=False`, until /health answers: the process is up)."""
    port = port or free_port()
    log_path = tmp_dir / f"server-{port}.log"
    full_env = {**os.environ, "EMBEDSERVE_ACCESS_LOG": "false", **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                *(launcher or [sys.executable, "-m", "embedserve.server"]),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *args,
            ],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/health{'/ready' if ready else ''}", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"server not ready in {timeout} s:\n{server.log()}")


def stop_server(server: RunningServer) -> None:
    server.http.close()
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def connect(url: str, timeout: float) -> socket.socket:
    """A raw connection to a server's URL; `timeout` only turns a hang into a failure (the deadlines
    under test are the server's)."""
    address = urlsplit(url)
    return socket.create_connection((address.hostname, address.port), timeout=timeout)


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when (monotonic) it closed it."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass  # closed with our unread bytes in its buffer: a reset, which still closes the connection
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open; got so far {data[:300]!r}") from None
    finally:
        sock.close()
    return data, time.monotonic()


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def read_one_response(sock: socket.socket) -> bytes:
    """One whole HTTP/1.1 response (by its Content-Length) from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


class FakeClock:
    """A monotonic clock that moves only when a test moves it: set `now`, or `advance()` it, which also
    fires the timers that fell due (the batcher's `Clock`: `time()` and `call_at()`)."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self._timers: list[_FakeTimer] = []

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _FakeTimer:
        timer = _FakeTimer(when, callback)
        self._timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = sorted((t for t in self._timers if t.when <= self.now and not t.cancelled), key=lambda t: t.when)
        self._timers = [t for t in self._timers if t.when > self.now and not t.cancelled]
        for timer in due:
            timer.callback()

    @property
    def pending(self) -> list[float]:
        """When the timers not yet fired nor cancelled are due."""
        return sorted(t.when for t in self._timers if not t.cancelled)


@dataclass
class _FakeTimer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


def metric(server: Any, name: str, **labels: str) -> float:
    """A sample of the server's /metrics (0 when it has none yet): `name` as exposed (with `_total` for
    counters), summed over the samples that carry `labels` (one, when they name it fully)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        float(sample.value)
        for family in text_string_to_metric_families(server.http.get("/metrics").text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def quantize_cli(source: str | Path, out: Path, *extra: str, bench_seconds: float = 0) -> Path:
    """`embedserve quantize SOURCE --out DIR`, as a user runs it (no progress bars); asserts it wrote `out`."""
    command = [str(Path(sys.executable).parent / "embedserve"), "quantize", str(source), "--out", str(out)]
    result = subprocess.run(
        [*command, "--bench-seconds", str(bench_seconds), "--no-progress", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out
