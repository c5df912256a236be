"""`backend: auto`: a model folder served on the CPU through its ONNX fp32 export, made once and cached.

On CPUs ONNX Runtime ran MiniLM faster than PyTorch with a third of the memory (bench/README.md), and the fp32
export gives the same vectors: every token's and text's cosine with PyTorch's is at least EXACT_COSINE, checked
before the export is kept. The export is cached by the folder's content (`models.fingerprint`) and the versions
that made it, under EMBEDSERVE_CACHE_DIR (default ~/.cache/embedserve), so a later start loads it in about a
second; a file lock lets concurrent starts share one export.

What `auto` leaves to PyTorch, saying why in one line: an accelerator, a classifier, a hub id (not a local folder),
a model the exporter cannot reproduce, or a machine without onnxruntime. An `embedserve quantize` folder is served
by the ONNX backend its graphs call for.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from embedserve.models.exported import CONFIG_FILE, FORMAT, read_config
from embedserve.models.fingerprint import folder_fingerprint
from embedserve.models.sources import guess_backend, resolve_source
from embedserve.models.spec import AUTO_BACKEND, ModelSpec
from embedserve.models.yes_no import is_causal_lm
from embedserve.quantize.pipeline import LLM_RERANKERS_NOT_EXPORTED

log = logging.getLogger("embedserve.models")

EXACT_COSINE = 0.99999
"""The export is kept only when every token's and text's cosine with PyTorch's reaches this."""


def cache_dir() -> Path:
    return Path(os.environ.get("EMBEDSERVE_CACHE_DIR") or Path.home() / ".cache" / "embedserve")


def resolve_backend(spec: ModelSpec) -> ModelSpec:
    """`spec` with a concrete backend (and, for an export, the cached folder as its source); a spec that names
    its backend is returned as it is."""
    if spec.backend != AUTO_BACKEND:
        return spec
    source = resolve_source(spec.source)
    guessed = guess_backend(source)
    if guessed != AUTO_BACKEND:  # an `embedserve quantize` folder
        return spec.model_copy(update={"backend": guessed})
    why = _not_exportable(spec, source)
    if why is not None:
        log.info("serving with torch: %s", why, extra={"model": spec.id})
        return spec.model_copy(update={"backend": "torch"})
    try:
        folder = _cached_export(spec, source)
    except Exception as exc:  # the exporter raises many kinds; any of them means torch serves it
        log.warning(
            "serving with torch: the ONNX export failed (%s)", f"{type(exc).__name__}: {exc}", extra={"model": spec.id}
        )
        return spec.model_copy(update={"backend": "torch"})
    return spec.model_copy(update={"backend": "onnx", "source": str(folder)})


def _not_exportable(spec: ModelSpec, source: str) -> str | None:
    if spec.kind not in ("embed", "rerank"):
        return f"the ONNX export takes embedding and rerank models, not {spec.kind}"
    if not Path(source).is_dir():
        return f"{spec.source!r} is not a local folder"
    if spec.kind == "rerank" and (spec.template is not None or is_causal_lm(source)):
        return LLM_RERANKERS_NOT_EXPORTED
    if spec.device not in ("auto", "cpu"):
        return f"device {spec.device!r}: ONNX fp32 is the CPU's default"
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install 'embedserve[onnx]')"
    if spec.device == "auto" and _accelerator_present():
        return "an accelerator is present: ONNX fp32 is the CPU's default"
    return None


def _accelerator_present() -> bool:
    """An NVIDIA driver or Apple silicon, seen without importing torch (seconds and hundreds of MB that a cached
    export never needs)."""
    return Path("/proc/driver/nvidia/version").exists() or (sys.platform == "darwin" and platform.machine() == "arm64")


def _cached_export(spec: ModelSpec, source: str) -> Path:
    root = cache_dir() / "onnx"
    folder = root / _key(source, spec.kind)
    # A whole export (it appears by a rename) is read without the lock: a read-only filesystem holding one made at
    # build time serves it.
    if _made(folder, spec):
        return folder
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if _made(folder, spec):  # another process made it while this one waited
            return folder
        from embedserve.quantize.export import export
        from embedserve.quantize.graph import fp32_graphs, share_weights

        log.info(
            "exporting to ONNX fp32 once (later starts load it from the cache)",
            extra={"model": spec.id, "folder": str(folder)},
        )
        started = time.perf_counter()
        partial = root / f".{folder.name}.{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            exported = export(source, partial, kind=spec.kind, min_cosine=EXACT_COSINE)
            share_weights(partial, fp32_graphs(read_config(partial)))
            partial.rename(folder)  # whole or not at all: a crash leaves only the hidden partial folder
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        verification = exported.manifest["export"].get("verification") or {}
        log.info(
            "exported to ONNX fp32",
            extra={
                "model": spec.id,
                "seconds": round(time.perf_counter() - started, 1),
                "exporter": exported.manifest["export"]["exporter"],
                **{k: v for k, v in verification.items() if isinstance(v, int | float)},
            },
        )
        return folder


def _made(folder: Path, spec: ModelSpec) -> bool:
    if not (folder / CONFIG_FILE).is_file():
        return False
    log.info("using the cached ONNX export", extra={"model": spec.id, "folder": str(folder)})
    return True


def _key(source: str, kind: str) -> str:
    """The folder's content, its kind, and what an export depends on: the folder format and the libraries."""
    versions = [_version(name) for name in ("onnx", "torch", "transformers", "sentence-transformers", "optimum-onnx")]
    digest = hashlib.blake2b(digest_size=12)
    parts = [folder_fingerprint(source), kind, FORMAT, *versions]
    digest.update("|".join(str(p) for p in parts).encode())
    for module in _EXPORT_CODE:  # a changed exporter (a new head, a new field) makes a new export
        found = importlib.util.find_spec(module)
        digest.update(Path(found.origin).read_bytes() if found and found.origin else module.encode())
    return f"{Path(source).name}-{digest.hexdigest()}"


_EXPORT_CODE = (
    "embedserve.quantize.export",
    "embedserve.quantize.graph",
    "embedserve.quantize.packed_graph",
    "embedserve.quantize.pipeline",
    "embedserve.quantize.verify",
    "embedserve.models.exported",
    "embedserve.models.heads",
    "embedserve.models.packed_rows",
    "embedserve.models.pooling",
)
"""The modules whose code shapes an export: their source is part of the cache key (found, not imported)."""


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "-"
