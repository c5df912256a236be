"""Which INT8 kernels a CPU runs and which graphs they compute exactly: read from the CPU's flags given
here, never from the host's own, so every row holds on every machine."""

from __future__ import annotations

import pytest

from embedserve.models.isa import cpu_flags, exact_isas, exact_on, host_isa, weight_bits


@pytest.mark.parametrize(
    ("flags", "machine", "isa"),
    [
        ("fpu sse sse2 avx avx2 fma bmi2", "x86_64", "avx2"),
        ("avx2 avx512f avx512bw", "x86_64", "avx2"),  # Skylake-SP: AVX-512, but vpmaddubsw
        ("avx2 avx512f avx512bw avx512_vnni", "x86_64", "avx512_vnni"),  # /proc/cpuinfo's spelling
        ("AVX2 AVX512F AVX512VNNI", "x86_64", "avx512_vnni"),  # numpy's
        ("avx2 avx_vnni", "x86_64", "avx512_vnni"),
        ("avx2 amx_int8", "x86_64", "avx512_vnni"),
        ("", "aarch64", "arm64"),
        ("", "arm64", "arm64"),
    ],
)
def test_host_isa_reads_the_flags(flags: str, machine: str, isa: str) -> None:
    assert host_isa(flags.split(), machine) == isa


def test_the_flags_are_this_process_s_cpu() -> None:
    """numpy's CPUID probe, which sees an emulated CPU as it is (the slow tier runs under qemu)."""
    from numpy._core._multiarray_umath import __cpu_features__

    flags = cpu_flags()
    assert {name for name, present in __cpu_features__.items() if present} <= flags
    assert host_isa(flags) == host_isa()


def test_only_avx2_saturates_and_only_full_range_weights() -> None:
    assert weight_bits(reduce_range=True) == 7 and weight_bits(reduce_range=False) == 8
    assert exact_isas(7) == ["avx2", "avx512_vnni", "arm64"]  # a 7-bit graph is the same on every CPU
    assert exact_isas(8) == ["avx512_vnni", "arm64"]
    assert not exact_on("avx2", 8) and exact_on("avx2", 7)
