"""The server fixes glibc's mmap threshold for torch models (server/malloc.py says why)."""

from __future__ import annotations

import sys

import pytest

from embedserve.server.malloc import fix_mmap_threshold


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_threshold_is_set_on_glibc() -> None:
    assert fix_mmap_threshold(4 * 2**20) is True


def test_zero_leaves_malloc_alone() -> None:
    assert fix_mmap_threshold(0) is False
