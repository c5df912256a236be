"""glibc malloc, set for a long-running inference server.

glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so a forward pass's
activations come to live in the heap, and every new batch shape leaves holes that are never returned:
the torch server grew from 535 to 1614 MB over a benchmark grid of loads (bench run 20261123T124624Z).
A fixed threshold keeps blocks above it in their own mappings, returned to the system when freed:
4 MiB held a `long` 32×32 load at 631 MB instead of 915 (16 MiB: 810), and mixed 32×1 at 639–648 MB
instead of 691–714. The price is page faults on fresh mappings: in alternating A/B runs on this 2-core
machine, mixed 32×1 gave 52–65 items/s against 61–70 without it (0–15% less, inside a noise of ±15%);
1 MiB saved little more (615 MB) for ~18% fewer items/s. Bounded memory under changing loads is worth
that here; `EMBEDSERVE_MALLOC_MMAP_THRESHOLD=0` gives the other choice. ONNX Runtime's own arena gains nothing from it
(238 against 237 MB), so the server sets it only where a model may run on torch: backend `torch`, or `auto`, which
falls back to torch when the export fails (set before loading, it cannot wait for the outcome)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("embedserve.malloc")

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def fix_mmap_threshold(nbytes: int) -> bool:
    """Sets glibc's mmap threshold (turning off its dynamic growth); False where there is no glibc or
    `nbytes` is 0 (leave malloc as it is)."""
    if nbytes <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt  # glibc and musl both have the symbol; musl ignores the option
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(_M_MMAP_THRESHOLD, nbytes) == 1
    if not done:
        log.warning("could not set malloc's mmap threshold", extra={"bytes": nbytes})
    return done


def trim() -> bool:
    """Returns the heap's free pages to the system (glibc's malloc_trim): after a model is unloaded, its freed
    weights and arenas would otherwise stay in the process's resident memory, held for the next allocation.
    Whether any memory was returned (False where there is no glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl has no malloc_trim
        return False
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(malloc_trim(0))
