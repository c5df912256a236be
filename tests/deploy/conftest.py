"""The real images (podman), built once per session for the tests that run them: tests/deploy/images.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy import images

AMD64_TAG = "localhost/embedserve:test-amd64"
ARM64_TAG = "localhost/embedserve:test-arm64"


@pytest.fixture(scope="session")
def podman_ready() -> None:
    try:
        images.ensure_tools()
    except images.Unavailable as error:
        pytest.skip(f"podman cannot run here: {error}")


@pytest.fixture(scope="session")
def build_context(tmp_path_factory: pytest.TempPathFactory, podman_ready: None) -> Path:
    return images.build_context(tmp_path_factory.mktemp("image-context"))


@pytest.fixture(scope="session")
def amd64_image(podman_ready: None, build_context: Path) -> str:
    """Dockerfile, built on the local bookworm root. PyTorch's index is unreachable here: torch comes through this
    machine's pip configuration (its local folder holds the same CPU build of torch 2.13.0)."""
    try:
        base = images.base_image("amd64")
    except images.Unavailable as error:
        pytest.skip(f"no amd64 base root: {error}")
    images.build("Dockerfile", AMD64_TAG, "amd64", base, build_context, "TORCH_INDEX=https://pypi.org/simple")
    return AMD64_TAG


@pytest.fixture(scope="session")
def arm64_image(podman_ready: None, build_context: Path) -> str:
    """Dockerfile.arm64, built on the local arm64 bookworm root under emulation."""
    try:
        images.ensure_aarch64_emulation()
        base = images.base_image("arm64")
    except images.Unavailable as error:
        pytest.skip(f"no emulated aarch64 here: {error}")
    images.build("Dockerfile.arm64", ARM64_TAG, "arm64", base, build_context)
    return ARM64_TAG
