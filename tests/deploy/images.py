"""Real images, built and run with podman: the tools, the cached base roots, builds, containers.

No registry is reachable here, so each image is built on a Debian bookworm root made locally
(deploy/podman/base-root.sh) in place of python:3.11-slim-bookworm. The roots are cached as tarballs under
~/.cache/embedserve/images (EMBEDSERVE_IMAGE_CACHE), keyed by the script, the architecture and the CA bundle that
goes into them; podman keeps the images' layers itself, so a second run rebuilds only what changed.

Podman runs with deploy/podman/containers.conf (runc, ulimits this machine allows); the arm64 image runs on
emulated aarch64 (qemu-user-static through binfmt_misc) presenting an Oracle A1's CPU, Neoverse-N1. Compose services
find each other by name only with the network backend's DNS: Debian's podman 4.3 uses CNI, whose bridge resolves no
names without the dnsname plugin (a package of its own, not among podman's dependencies); netavark needs aardvark-dns.
Where a tool or privilege is missing, `Unavailable` carries the command and its error line: the tests skip with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support import ROOT, free_port

CACHE = Path(os.environ.get("EMBEDSERVE_IMAGE_CACHE", Path.home() / ".cache" / "embedserve" / "images"))
CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"
BASE_SCRIPT = ROOT / "deploy" / "podman" / "base-root.sh"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
APT_PACKAGES = [
    "podman",
    "buildah",
    "runc",
    "crun",
    "debootstrap",
    "qemu-user-static",
    "binfmt-support",
    "golang-github-containernetworking-plugin-dnsname",
]
# Name resolution in a podman network, by network backend: the package that gives it and where podman looks for it
# (containers.conf's default cni_plugin_dirs and helper_binaries_dir). Without it `redis` and `embedserve` do not
# resolve inside the compose network, and each replica falls back to limits of its own.
CNI_PLUGIN_DIRS = ("/usr/local/libexec/cni", "/usr/libexec/cni", "/usr/local/lib/cni", "/usr/lib/cni", "/opt/cni/bin")
PODMAN_HELPER_DIRS = ("/usr/local/libexec/podman", "/usr/local/lib/podman", "/usr/libexec/podman", "/usr/lib/podman")
NETWORK_DNS = {
    "cni": ("golang-github-containernetworking-plugin-dnsname", [Path(d, "dnsname") for d in CNI_PLUGIN_DIRS]),
    "netavark": ("aardvark-dns", [Path(d, "aardvark-dns") for d in PODMAN_HELPER_DIRS]),
}
# The CPU of an Oracle A1 (Ampere Altra): qemu presents it, so ONNX Runtime picks the kernels an A1 would.
A1_CPU = "neoverse-n1"
# Under emulation, `import onnxruntime` segfaults while the host's CPU topology is visible (cpuinfo reads it).
EMULATION_RUN_ARGS = ["-e", f"QEMU_CPU={A1_CPU}", "--security-opt", "mask=/sys/devices/system/cpu"]
# Where pip is configured on this machine: files mounted into builds at the same paths, with what they point at.
PIP_CONFIG_FILES = [Path("/etc/pip.conf"), Path("/etc/xdg/pip"), Path.home() / ".config" / "pip", Path.home() / ".pip"]
TIMINGS = CACHE / "timings.jsonl"


class Unavailable(Exception):
    """A step this machine cannot do; str() is the command and its error line (the tests' skip reason)."""


def _env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def run(
    command: list[str], *, timeout: float = 600, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env or _env())
    if check and result.returncode != 0:
        # The cause first: CI shows only part of a long failure, and a build's log runs thousands of lines.
        raise AssertionError(
            f"{shlex.join(command)}: exit {result.returncode}: {error_line(result)} ({disk_free()})\n"
            f"{result.stdout[-3000:]}{result.stderr[-5000:]}"
        )
    return result


def disk_free(path: Path = CACHE) -> str:
    """Free space where builds and venvs go: a full disk fails builds, pip and containers alike."""
    while not path.exists():
        path = path.parent
    return f"{shutil.disk_usage(path).free / 2**30:.1f} GiB free on {path}"


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], timeout=timeout, check=check)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "rror" in line or "denied" in line or "not permitted" in line]
    return (errors or lines or [f"exit {result.returncode}"])[-1].strip()


def record(step: str, seconds: float, **details: object) -> None:
    """Appends a measured step to the cache's timings file (what the README's figures come from)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with TIMINGS.open("a") as out:
        out.write(
            json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": step, "s": round(seconds, 1), **details})
            + "\n"
        )
    print(f"[images] {step}: {seconds:.1f} s {details or ''}", file=sys.stderr)


def apt_install(packages: list[str]) -> subprocess.CompletedProcess[str]:
    """apt-get install of Debian's packages (after an apt-get update when the first try fails)."""
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    command = [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    result = run(command, check=False, timeout=900)
    if result.returncode != 0:
        run([*sudo, "apt-get", "update", "-q"], check=False, timeout=600)
        result = run(command, check=False, timeout=900)
    return result


def network_backend() -> str:
    """The network backend podman uses here: cni or netavark (chosen by podman on a fresh store)."""
    return podman("info", "--format", "{{.Host.NetworkBackend}}", check=False).stdout.strip()


def network_dns_missing(backend: str) -> str | None:
    """The package that gives BACKEND's networks name resolution, when it is not installed; None when it is."""
    if backend not in NETWORK_DNS:
        return None
    package, places = NETWORK_DNS[backend]
    return None if any(place.exists() for place in places) else package


def ensure_tools() -> None:
    """podman and friends from Debian's packages (installed when missing), and a podman that can start a container."""
    missing = [
        tool for tool in ("podman", "buildah", "runc", "debootstrap", "qemu-aarch64-static") if not shutil.which(tool)
    ]
    if missing:
        result = apt_install(APT_PACKAGES)
        if result.returncode != 0:
            raise Unavailable(f"apt-get install {shlex.join(APT_PACKAGES)}: {error_line(result)}")
    if os.geteuid() != 0:
        raise Unavailable(
            f"the base roots need root (debootstrap, podman import of a root-owned tree); running as uid {os.geteuid()}"
        )
    info = podman("info", "--format", "{{.Store.GraphDriverName}}", check=False)
    if info.returncode != 0:
        raise Unavailable(f"podman info: {error_line(info)}")
    # A podman installed before (by hand, or by this step when it lacked the DNS plugin) may resolve no names.
    # Only the compose test needs them: where this install fails, that test says so, naming the package.
    if dns := network_dns_missing(network_backend()):
        apt_install([dns])


def ensure_aarch64_emulation() -> None:
    """binfmt_misc mounted and qemu-aarch64 registered (with the F flag: it works inside containers)."""
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "register").exists():
        result = run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], check=False)
        if result.returncode != 0:
            raise Unavailable(f"mount -t binfmt_misc binfmt_misc {binfmt}: {error_line(result)}")
    if not (binfmt / "qemu-aarch64").exists():
        result = run(["update-binfmts", "--enable", "qemu-aarch64"], check=False)
        if result.returncode != 0:
            raise Unavailable(f"update-binfmts --enable qemu-aarch64: {error_line(result)}")
    if not (binfmt / "qemu-aarch64").read_text().startswith("enabled"):
        raise Unavailable(f"{binfmt / 'qemu-aarch64'} is not enabled")


def qualified(image: str) -> str:
    """docker.io/… for a short name, as Docker reads it (podman refuses short names without a search registry)."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"


def base_key(arch: str) -> str:
    digest = hashlib.sha256()
    for part in (arch.encode(), BASE_SCRIPT.read_bytes(), CA_BUNDLE.read_bytes() if CA_BUNDLE.exists() else b""):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:12]


def base_image(arch: str) -> str:
    """localhost/embedserve-base:bookworm-ARCH-KEY, imported from the cached root (made first when missing)."""
    key = base_key(arch)
    tag = f"localhost/embedserve-base:bookworm-{arch}-{key}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    tarball = CACHE / f"bookworm-{arch}-{key}.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        result = run([str(BASE_SCRIPT), arch, str(tarball)], check=False, timeout=1800)
        if result.returncode != 0:
            raise Unavailable(f"{BASE_SCRIPT.name} {arch}: {error_line(result)}")
        record(f"base root {arch}", time.monotonic() - start, tarball=str(tarball))
    podman("import", "--arch", arch, str(tarball), tag, timeout=900)
    return tag


def _local_folder(location: str) -> Path | None:
    """The folder to mount for a find-links or index location on this machine (an index's root, above simple/)."""
    if not location.startswith(("/", "file:///")):
        return None
    path = Path(location.removeprefix("file://"))
    path = path.parent if path.name == "simple" else path
    return path if path.is_dir() else None


def pip_mounts() -> list[str]:
    """-v options that give a build this machine's pip configuration and the local folders and indexes it names
    (find-links, index-url, extra-index-url), each at the same path."""
    files = [path for path in PIP_CONFIG_FILES if path.exists()]
    locations: list[str] = []
    for path in files:
        for conf in [path] if path.is_file() else sorted(path.glob("*.conf")):
            for line in conf.read_text(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key.strip() in {"find-links", "index-url", "extra-index-url"}:
                    locations += value.split()
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL"):
        locations += os.environ.get(name, "").split()
    folders = sorted({folder for location in locations if (folder := _local_folder(location))})
    home = str(Path.home())
    mounts: list[str] = []
    for path in [*files, *folders]:
        target = "/root" + str(path)[len(home) :] if str(path).startswith(home + "/") else str(path)
        mounts += ["-v", f"{path}:{target}:ro"]
    return mounts


def build_context(tmp: Path) -> Path:
    """The repository root, or with EMBEDSERVE_IMAGE_CONTEXT=HEAD the last commit's files (while others edit the tree)."""
    if os.environ.get("EMBEDSERVE_IMAGE_CONTEXT", "worktree") != "HEAD":
        return ROOT
    context = tmp / "context"
    context.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(context)], input=archive.stdout, check=True)
    return context


def build(dockerfile: str, tag: str, arch: str, base: str, context: Path, *build_args: str) -> float:
    """podman build of a Dockerfile from the repository (docker format: OCI would drop HEALTHCHECK); its seconds."""
    command = ["build", "--format", "docker", "--arch", arch, "--build-arg", f"BASE_IMAGE={base}", *pip_mounts()]
    for arg in build_args:
        command += ["--build-arg", arg]
    command += ["-f", str(context / dockerfile), "-t", tag, str(context)]
    start = time.monotonic()
    podman(*command, timeout=3600)
    seconds = time.monotonic() - start
    size = podman("image", "inspect", tag, "--format", "{{.Size}}").stdout.strip()
    record(f"build {dockerfile} ({arch})", seconds, size_mb=round(int(size) / 1e6))
    return seconds


@dataclass
class Container:
    name: str
    url: str
    started: float
    ready_s: float = 0.0
    args: list[str] = field(default_factory=list)

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def exec(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command, timeout=timeout, check=False)

    def state(self, template: str) -> str:
        return podman("inspect", self.name, "--format", template).stdout.strip()

    def wait_ready(self, timeout: float = 600) -> float:
        """Polls /health/ready until 200; the timeout only turns a hang into a failure."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.state("{{.State.Status}}") == "running", f"{self.name} exited:\n{self.logs()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/ready", timeout=5).status_code == 200:
                    self.ready_s = time.monotonic() - self.started
                    return self.ready_s
            time.sleep(0.5)
        raise AssertionError(f"{self.name} not ready within {timeout} s:\n{self.logs()}")


@contextlib.contextmanager
def container(name: str, image: str, *args: str, entrypoint_args: tuple[str, ...] = ()) -> Iterator[Container]:
    """`podman run -d --name NAME -p PORT:8000 ARGS IMAGE`: the README's `docker run`, on a free host port."""
    podman("rm", "-f", "-t", "0", name, check=False)
    port = free_port()
    start = time.monotonic()
    podman("run", "-d", "--name", name, "-p", f"{port}:8000", *args, image, *entrypoint_args)
    running = Container(name, f"http://127.0.0.1:{port}", start, args=list(args))
    try:
        yield running
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def stop(running: Container, grace: int = 40) -> tuple[int, float]:
    """`podman stop -t 40`: SIGTERM, then the server drains; its exit code and the seconds stop took."""
    start = time.monotonic()
    podman("stop", "-t", str(grace), running.name, timeout=grace + 60)
    return int(running.state("{{.State.ExitCode}}")), time.monotonic() - start


PODMAN_COMPOSE = "podman-compose==1.6.0"


def podman_compose() -> list[str]:
    """podman-compose from PyPI in a virtual environment of its own under the cache (not the project's)."""
    venv = CACHE / f"tools-{PODMAN_COMPOSE.replace('==', '-')}"
    program = venv / "bin" / "podman-compose"
    if not program.exists():
        run([sys.executable, "-m", "venv", str(venv)])
        result = run([str(venv / "bin" / "pip"), "install", "-q", PODMAN_COMPOSE], check=False, timeout=900)
        if result.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise Unavailable(f"pip install {PODMAN_COMPOSE}: {error_line(result)}")
    return [str(program)]


def build_helper_image(containerfile: str, name: str, base: str) -> str:
    """deploy/podman/redis.Containerfile or prometheus.Containerfile on the local root (Debian's packages), tagged by
    what determines it: localhost/embedserve-NAME:KEY."""
    folder = ROOT / "deploy" / "podman"
    key = hashlib.sha256((folder / containerfile).read_bytes() + base.encode()).hexdigest()[:12]
    tag = f"localhost/embedserve-{name}:{key}"
    if podman("image", "exists", tag, check=False).returncode != 0:
        start = time.monotonic()
        podman(
            "build",
            "--format",
            "docker",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "-f",
            str(folder / containerfile),
            "-t",
            tag,
            str(folder),
            timeout=1800,
        )
        record(f"build {containerfile}", time.monotonic() - start)
    return tag
