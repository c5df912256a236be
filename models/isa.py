"""Which INT8 kernels a CPU runs, and which INT8 graphs they compute exactly: the one home of that rule.

onnxruntime's MLAS multiplies u8 activations by s8 weights with:
- `avx2` (x86-64 without VNNI, AVX-512BW included): `vpmaddubsw`, which adds each pair of u8 x s8
  products into a saturating int16. Full-range weights overflow it (255 x 127 x 2 = 64770 > 32767), so
  outputs are clipped; 7-bit weights (`reduce_range`) cannot (255 x 63 x 2 = 32130).
- `avx512_vnni` (AVX-512 VNNI, AVX-VNNI, AMX): `vpdpbusd`, which accumulates in int32: exact.
- `arm64`: `udot`/`sdot`, or widened NEON products: exact.

So a graph with 7-bit weights computes the same integers on every CPU, and one with 8-bit weights
only where the kernels are exact; anywhere else it serves below the accuracy its gate accepted.
u8 x u8 products are widened to 16 bits before any pairwise sum on every ISA, so they are exact
everywhere: `quantize.exact` uses that to evaluate an 8-bit graph's true integers on any host.
"""

from __future__ import annotations

import platform
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Literal

Isa = Literal["avx2", "avx512_vnni", "arm64"]
ISAS: tuple[Isa, ...] = ("avx2", "avx512_vnni", "arm64")
_EXACT_FLAGS = frozenset({"avx512vnni", "avxvnni", "amxint8"})  # lowercase, no underscores
_UNPROBED_FLAGS = frozenset({"avx_vnni", "amx_int8"})
SATURATING_BITS = 8
"""Weight bits from which `avx2`'s int16 pair sums can saturate (7-bit weights never do)."""


def host_isa(flags: Collection[str] | None = None, machine: str | None = None) -> Isa:
    """The ISA this machine's onnxruntime runs INT8 kernels with. `flags`: the CPU's feature names as
    /proc/cpuinfo or numpy spell them (case and underscores aside); default `cpu_flags()`."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64") or machine.startswith("armv8"):
        return "arm64"
    names = {flag_key(f) for f in (cpu_flags() if flags is None else flags)}
    return "avx512_vnni" if _EXACT_FLAGS & names else "avx2"


_SHARED_FLAGS = frozenset(
    {"avx", "avx2", "f16c", "bmi2", "popcnt", "movbe", "gfni", "vaes", "vpclmulqdq", "avx512f", "avx512cd",
     "avx512bw", "avx512dq", "avx512vl", "avx512vnni", "avx512ifma", "avx512vbmi", "avx512vbmi2", "avx512bitalg",
     "avx512vpopcntdq", "avx512bf16", "avx512fp16"}
)  # fmt: skip
"""Features numpy probes that /proc/cpuinfo spells the same (case and underscores aside): where the two disagree on
any, /proc/cpuinfo describes another CPU than the one this process runs on."""


def flag_key(flag: str) -> str:
    """A feature's name as /proc/cpuinfo and numpy both spell it: lowercase, no underscores."""
    return flag.lower().replace("_", "")


def cpu_flags(probed: Mapping[str, bool] | None = None, cpuinfo: str | None = None) -> set[str]:
    """The CPU's features as this process sees them: numpy's CPUID probe (what onnxruntime's own
    dispatch reads too; under qemu, the emulated CPU's), plus the flags of /proc/cpuinfo numpy does not
    probe (AVX-VNNI, AMX) where /proc/cpuinfo describes the same CPU. Under qemu-user it names the host's
    (an AVX-VNNI host under `qemu-x86_64 -cpu max` is not an AVX-VNNI CPU): there it disagrees with the
    probe on the features both know, and only the probe counts. `probed` and `cpuinfo`: for tests."""
    if probed is None:
        from numpy._core._multiarray_umath import __cpu_features__ as probed
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = {name for name, present in probed.items() if present}
    listed = next((line.partition(":")[2].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    seen = {flag_key(name) for name in flags} & _SHARED_FLAGS
    known = {flag_key(name) for name in probed} & _SHARED_FLAGS
    if {flag_key(name) for name in listed} & known == seen:
        flags.update(name for name in listed if name in _UNPROBED_FLAGS)
    return flags


def exact_on(isa: Isa, weight_bits: int) -> bool:
    """Whether `isa`'s u8 x s8 kernels compute a graph with `weight_bits`-bit weights exactly."""
    return isa != "avx2" or weight_bits < SATURATING_BITS


def weight_bits(reduce_range: bool) -> int:
    """The weights' bits for quantize's `reduce_range` setting."""
    return 7 if reduce_range else 8


def exact_isas(bits: int) -> list[Isa]:
    """The ISAs that compute a graph with `bits`-bit weights exactly."""
    return [isa for isa in ISAS if exact_on(isa, bits)]
