"""Every package the ARM image installs has a wheel for linux/aarch64 and CPython 3.11, and none of them is torch.

pip resolves deploy/requirements-arm64.txt (the lines Dockerfile.arm64 installs) as it would inside
python:3.11-slim-bookworm on arm64 (glibc 2.36: manylinux_2_17 to manylinux_2_36) and downloads the wheels into a
temporary folder. Nothing is built from source there: the image has no compiler.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.tags import Tag
from packaging.utils import parse_wheel_filename

from tests.support import ROOT

pytestmark = pytest.mark.slow  # asks the package index for every aarch64 wheel

REQUIREMENTS = ROOT / "deploy" / "requirements-arm64.txt"
PLATFORMS = ["manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37))]
TIMEOUT = 300
UNREACHABLE = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Max retries exceeded",
    "Network is unreachable",
)


def _runs_on_arm64_cpython311(tag: Tag) -> bool:
    return (
        tag.interpreter in {"py3", "py2.py3", "cp311"} or (tag.interpreter.startswith("cp3") and tag.abi == "abi3")
    ) and (tag.platform == "any" or tag.platform in PLATFORMS)


def test_every_arm64_requirement_resolves_to_an_aarch64_wheel(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", "3.11"]
    command += ["--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none"]
    command += [f"--platform={platform}" for platform in PLATFORMS]
    command += ["--dest", str(tmp_path), "-r", str(REQUIREMENTS)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"the package index did not answer within {TIMEOUT} s: aarch64 wheels not checked")
    if result.returncode != 0 and any(sign in result.stdout + result.stderr for sign in UNREACHABLE):
        pytest.skip(f"the package index is unreachable: aarch64 wheels not checked\n{result.stderr[-1000:]}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    wheels = {parse_wheel_filename(path.name)[0]: parse_wheel_filename(path.name)[3] for path in tmp_path.iterdir()}
    assert len(wheels) == len(list(tmp_path.iterdir())), "only wheels, no source archives"
    for name, tags in wheels.items():
        assert any(_runs_on_arm64_cpython311(tag) for tag in tags), f"{name}: {sorted(map(str, tags))}"
    assert {"onnxruntime", "numpy", "tokenizers", "uvloop"} <= set(wheels)
    assert not {"torch", "sentence-transformers", "transformers"} & set(wheels), "the ARM image is torch-free"
