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


PROBED_AVX2 = {"AVX": True, "AVX2": True, "F16C": True, "GFNI": False, "AVX512F": False, "AVX512VNNI": False}
"""What numpy's CPUID probe reports on an AVX2 CPU (qemu-x86_64 -cpu max emulates one)."""


@pytest.mark.parametrize(
    ("probed", "cpuinfo", "isa"),
    [
        # Alder Lake: AVX-VNNI without AVX-512. numpy does not probe AVX-VNNI; /proc/cpuinfo, which agrees with
        # the probe on everything both name, does.
        (PROBED_AVX2, "flags\t: fpu avx avx2 f16c avx_vnni", "avx512_vnni"),
        # An AVX-512 and AVX-VNNI host (AMD Zen 5) under qemu-x86_64 -cpu max: /proc/cpuinfo is the host's, and
        # the process runs on the emulated AVX2 CPU.
        (PROBED_AVX2, "flags\t: fpu avx avx2 f16c gfni avx512f avx512_vnni avx_vnni", "avx2"),
        # Alder Lake under qemu: the host's gfni, which the emulated CPU lacks, gives the host away.
        (PROBED_AVX2, "flags\t: fpu avx avx2 f16c gfni avx_vnni", "avx2"),
        (PROBED_AVX2, "", "avx2"),  # no /proc/cpuinfo (not Linux)
    ],
)
def test_proc_cpuinfo_adds_what_numpy_does_not_probe_only_where_it_describes_this_process_s_cpu(
    probed: dict[str, bool], cpuinfo: str, isa: str
) -> None:
    assert host_isa(cpu_flags(probed, cpuinfo), "x86_64") == isa


def test_only_avx2_saturates_and_only_full_range_weights() -> None:
    assert weight_bits(reduce_range=True) == 7 and weight_bits(reduce_range=False) == 8
    assert exact_isas(7) == ["avx2", "avx512_vnni", "arm64"]  # a 7-bit graph is the same on every CPU
    assert exact_isas(8) == ["avx512_vnni", "arm64"]
    assert not exact_on("avx2", 8) and exact_on("avx2", 7)
