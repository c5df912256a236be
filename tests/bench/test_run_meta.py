"""What a bench run records of the machine it ran on."""

from __future__ import annotations

from bench.run import ISA_FLAGS, isa_flags
from embedserve.models.isa import host_isa


def test_a_run_records_the_cpu_features_that_tell_its_kind_apart_as_the_int8_kernels_see_them() -> None:
    flags = isa_flags()
    assert flags == [flag for flag in ISA_FLAGS if flag in flags]  # the table's order, nothing else
    exact = {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)
    assert (host_isa() == "avx512_vnni") == bool(exact) or host_isa() == "arm64"
