"""Start, probe and stop the servers under test, each as a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.procfs import process_tree, status_kb

REPO = Path(__file__).resolve().parent.parent
PEERS = ("infinity", "infinity-onnx", "litserve", "bentoml")
MULTIVECTOR_CONTENDERS = {"embedserve-multivector": "multivector", "embedserve-multivector-b64": "multivector-base64"}
"""embedserve answering /v1/multi-vector (JSON floats, base64 rows) instead of /v1/embeddings: the model folder
needs bge-m3's colbert_linear.pt."""
CONTENDERS = (
    "embedserve",
    "embedserve-padded",
    "embedserve-torch",
    "embedserve-torch-padded",
    "embedserve-cached",
    *MULTIVECTOR_CONTENDERS,
    "embedserve-onnx",
    "embedserve-onnx-int8",
    *PEERS,
    "naive",
)
OPT_IN_CONTENDERS = (*MULTIVECTOR_CONTENDERS, "embedserve-padded", "embedserve-torch-padded")
"""Run only when named: the multi-vector ones need a folder with bge-m3's colbert_linear.pt, and
`embedserve-padded` (the default engine, packing off: the padded graph) and `embedserve-torch-padded` (backend
torch, packing off) answer one question each, packed against padded."""
NO_CACHE = {"EMBEDSERVE_CACHE_BYTES": "0"}
"""embedserve's contenders run without the response cache (its peers have none, and the workloads cycle
through their texts); `embedserve-cached` is the same server with it on, for the `zipf` workload."""
# Each peer runs from its own virtual environment (their pins clash with ours and each other's):
# `make bench-peers` makes them. Their server scripts are in bench/peers/ and import nothing of ours.
INFINITY_VENV = REPO / "bench" / ".venv-infinity"
LITSERVE_VENV = REPO / "bench" / ".venv-litserve"
BENTOML_VENV = REPO / "bench" / ".venv-bentoml"
PEERS_DIR = REPO / "bench" / "peers"
CACHE = REPO / "bench" / ".cache"
ONNX_BACKENDS = {"embedserve-onnx": "onnx", "embedserve-onnx-int8": "onnx-int8"}
# No hub traffic from anything the bench starts: the model is always a local folder.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass(frozen=True)
class Contender:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    embeddings_path: str = "/v1/embeddings"
    ready_path: str = "/health/ready"
    body: str = "openai"
    """The embeddings route's request/answer shape, a key of bench.loadgen.BODY_FORMATS."""
    cwd: Path | None = None
    """Where to start it (default: the repository)."""


@contextlib.contextmanager
def checkout_env(repo: Path) -> Iterator[dict[str, str]]:
    """The environment under which `python -m embedserve.server` runs `repo`'s code. The editable install maps the
    name `embedserve` to this checkout whatever the working directory, so another checkout (a worktree of an older
    commit) goes first on PYTHONPATH, through a folder that holds a link named `embedserve` to it."""
    if repo.resolve() == REPO:
        yield {}
        return
    with tempfile.TemporaryDirectory(prefix="embedserve-checkout-") as shim:
        (Path(shim) / "embedserve").symlink_to(repo.resolve(), target_is_directory=True)
        yield {"PYTHONPATH": os.pathsep.join(filter(None, [shim, os.environ.get("PYTHONPATH")]))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def contender(
    name: str,
    port: int,
    model_id: str,
    model_dir: str,
    server_args: list[str],
    server_env: dict[str, str],
    onnx_dir: Path | None = None,
) -> Contender:
    """The command line for `name`; extra args and EMBEDSERVE_* env apply to embedserve only.
    The ONNX contenders serve `onnx_dir` (an `embedserve quantize` folder of the same model)."""
    if name in ONNX_BACKENDS:
        if onnx_dir is None:
            raise ValueError(f"{name} needs an ONNX folder of the model")
        models_file = Path(tempfile.mkdtemp(prefix="bench-models-")) / "models.yaml"
        entry = f"models:\n  - id: {model_id}\n    source: {onnx_dir}\n    backend: {ONNX_BACKENDS[name]}\n"
        models_file.write_text(entry)
        argv = [sys.executable, "-m", "embedserve.server", "serve", "--host", "127.0.0.1", "--port", str(port)]
        return Contender(name, [*argv, "--models", str(models_file), *server_args], {**NO_CACHE, **server_env})
    if name in ("infinity", "infinity-onnx"):
        return _infinity(name, port, model_id, model_dir)
    if name == "litserve":
        argv = [_peer_executable(name, LITSERVE_VENV, "python"), str(PEERS_DIR / "litserve_server.py")]
        argv += ["--model-dir", model_dir, "--host", "127.0.0.1", "--port", str(port)]
        return Contender(name, argv, ready_path="/health")
    if name == "bentoml":
        argv = [_peer_executable(name, BENTOML_VENV, "bentoml"), "serve", "bentoml_service:SentenceTransformers"]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        env = {"EMBED_MODEL_DIR": model_dir, "BENTOML_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1"}
        return Contender(
            name, argv, env, embeddings_path="/encode", ready_path="/readyz", body="sentences", cwd=PEERS_DIR
        )
    if name in ("embedserve-padded", "embedserve-torch", "embedserve-torch-padded"):
        # `embedserve-torch`: the model folder through PyTorch (backend: torch), as before backend auto. `-padded`:
        # packing off, the model's own padded forward (torch) or padded graph (the default engine), to weigh a
        # family's packed runner against it.
        models_file = Path(tempfile.mkdtemp(prefix="bench-models-")) / "models.yaml"
        backend = "auto" if name == "embedserve-padded" else "torch"
        packing = "    packing: off\n" if name.endswith("-padded") else ""
        models_file.write_text(
            f"models:\n  - id: {model_id}\n    source: {model_dir}\n    backend: {backend}\n{packing}"
        )
        argv = [sys.executable, "-m", "embedserve.server", "serve", "--host", "127.0.0.1", "--port", str(port)]
        return Contender(name, [*argv, "--models", str(models_file), *server_args], {**NO_CACHE, **server_env})
    if name in ("embedserve", "embedserve-cached", *MULTIVECTOR_CONTENDERS):
        argv = [
            sys.executable,
            "-m",
            "embedserve.server",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            f"{model_id}={model_dir}",
            *server_args,
        ]
        env = server_env if name == "embedserve-cached" else {**NO_CACHE, **server_env}
        if name in MULTIVECTOR_CONTENDERS:
            return Contender(name, argv, env, embeddings_path="/v1/multi-vector", body=MULTIVECTOR_CONTENDERS[name])
        return Contender(name, argv, env)
    if name == "naive":
        argv = [sys.executable, "-m", "bench.naive_server", "--port", str(port), "--model-dir", model_dir]
        return Contender(name, argv)
    raise ValueError(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}")


def _peer_executable(name: str, venv: Path, executable: str) -> str:
    """A program in a peer's venv, or a ValueError saying how to make the venv."""
    path = venv / "bin" / executable
    if not path.exists():
        raise ValueError(f"{name} is not installed in {venv}: run `make bench-peers`")
    return str(path)


def _infinity(name: str, port: int, model_id: str, model_dir: str) -> Contender:
    """Infinity, torch engine (`infinity`) or ONNX through optimum (`infinity-onnx`), on the CPU, offline."""
    executable = _peer_executable(name, INFINITY_VENV, "infinity_emb")
    cwd = None
    if name == "infinity-onnx":
        # Infinity finds the graph by globbing a local folder and hands optimum the path it found, while
        # optimum-onnx matches bare file names: only `--model-id .` (run inside the folder) gives it one.
        cwd = ensure_infinity_onnx_folder(model_dir, CACHE / f"{model_id}-infinity-onnx")
        # Its ONNX embedder pools with [CLS] unless told otherwise; MiniLM pools by mean.
        engine = ["--engine", "optimum", "--pooling-method", "mean"]
        model_dir = "."
    else:
        engine = ["--engine", "torch", "--no-bettertransformer"]
    argv = [executable, "v2", "--model-id", model_dir, "--served-model-name", model_id, "--port", str(port)]
    argv += ["--host", "127.0.0.1", "--device", "cpu", *engine]
    env = {"INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    return Contender(name, argv, env, embeddings_path="/embeddings", ready_path="/health", cwd=cwd)


def ensure_infinity_onnx_folder(model_dir: str, out: Path) -> Path:
    """The model folder (linked) plus `model.onnx` exported by optimum in Infinity's venv, made once in `out`.

    Infinity's ONNX engine needs an .onnx file in the folder and exports none itself; the export is
    optimum's plain one (`last_hidden_state` out, fp32), which Infinity pools and normalizes."""
    if (out / "model.onnx").is_file():
        return out
    cli = INFINITY_VENV / "bin" / "optimum-cli"
    if not cli.exists():
        raise ValueError(f"infinity-onnx needs optimum in {INFINITY_VENV}: run `make bench-peers`")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{out.name}-", dir=out.parent))  # beside `out`: renamed into place
    try:
        argv = [str(cli), "export", "onnx", "--model", model_dir, "--task", "feature-extraction"]
        argv += ["--library-name", "transformers", str(staging / "export")]
        print(f"exporting {model_dir} to ONNX for Infinity in {out} ...", file=sys.stderr, flush=True)
        done = subprocess.run(argv, env={**os.environ, **OFFLINE_ENV}, timeout=600, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"optimum's ONNX export failed ({done.returncode}):\n{done.stderr[-2000:]}")
        folder = staging / "folder"
        folder.mkdir()
        for entry in Path(model_dir).iterdir():
            (folder / entry.name).symlink_to(entry.resolve())
        (staging / "export" / "model.onnx").replace(folder / "model.onnx")
        shutil.rmtree(out, ignore_errors=True)  # a half-made folder from an interrupted run
        folder.replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


class Server:
    """A running contender (and whatever processes it starts); use as a context manager so all are stopped."""

    def __init__(self, spec: Contender, port: int, cwd: Path | None = None) -> None:
        self.spec, self.port = spec, port
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{spec.name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            spec.argv,
            cwd=cwd or spec.cwd or REPO,
            env={**os.environ, **OFFLINE_ENV, **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.started = time.perf_counter()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float) -> float:
        """Poll the contender's readiness route until 200; seconds from launch. Raises with the log tail on exit or timeout."""
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self._get(self.spec.ready_path) == 200:
                return time.perf_counter() - self.started
            time.sleep(0.25)
        raise RuntimeError(f"{self.spec.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def _get(self, path: str) -> int | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        except OSError:
            return None
        finally:
            conn.close()

    def peak_rss_mb(self) -> float | None:
        """Each process's peak resident memory, summed over the server's processes (LitServe, BentoML run
        several): an upper bound of their peak together, exact for a single process."""
        return self._tree_mb("VmHWM")

    def rss_mb(self) -> float | None:
        """Resident memory now, summed over the server's processes."""
        return self._tree_mb("VmRSS")

    def _tree_mb(self, key: str) -> float | None:
        if (own := status_kb(self.pid, key)) is None:
            return None
        kb = own + sum(status_kb(pid, key) or 0 for pid in process_tree(self.pid)[1:])
        return round(kb / 1024, 1)

    def log_tail(self, lines: int = 20) -> str:
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code. Child processes still alive
        once the server has exited are killed too (LitServe's SIGTERM leaves its workers running)."""
        if self.proc.poll() is None:
            children = [(pid, _started(pid)) for pid in process_tree(self.pid)[1:]]
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            _kill_survivors(children)
        self.log.close()
        return self.proc.returncode


def _started(pid: int) -> int | None:
    """A running process's start time (clock ticks after boot): with its pid, an identity pid reuse cannot
    fake. None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
        return None if fields[0] == b"Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _kill_survivors(processes: list[tuple[int, int | None]], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, the (pid, start time) processes still running after their server exited."""

    def alive() -> list[int]:
        return [pid for pid, started in processes if started is not None and _started(pid) == started]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)


def ensure_onnx_export(model_dir: str, out: Path) -> Path:
    """`embedserve quantize` of the model folder into `out`, once (reused while its embedserve.json is there, unless
    its fp32 weights are not in weights.onnx.data: folders from before quantize wrote a packed graph sharing them)."""
    if (out / "embedserve.json").is_file() and (out / "weights.onnx.data").is_file():
        return out
    argv = [
        sys.executable,
        "-m",
        "embedserve.quantize",
        model_dir,
        "--out",
        str(out),
        "--bench-seconds",
        "0",
        "--no-progress",
    ]
    print(f"exporting {model_dir} to ONNX (fp32 + INT8) in {out} ...", file=sys.stderr, flush=True)
    subprocess.run(argv, cwd=REPO, env={**os.environ, **OFFLINE_ENV}, check=True, timeout=1200)
    return out
