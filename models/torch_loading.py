"""What both torch runners share to load a sentence-transformers folder: device, dtype, thread
count, and whether the forward is compiled or packed (models.compiled, models.packed_encoder)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from embedserve.models.backend import BatchCost
from embedserve.models.cpus import cpu_budget
from embedserve.models.errors import ModelLoadError
from embedserve.models.families import family_of, position_limit
from embedserve.models.spec import ModelSpec

log = logging.getLogger("embedserve.models")

WARM_TEXT = "A longer sentence warms up the kernels for a few more positions of the sequence."

_DTYPES = {"float32", "float16", "bfloat16"}

PACKED_BATCHES_COST: BatchCost = "padded"
"""Torch runners are budgeted by padded tokens even where they run packed: the packed forward still runs
attention on a padded grid per length group, and budgeting it by real tokens measured worse: mixed 32x1
108.8 against 121.9 items/s (short 411 against 402, within noise; A B B A, AMD EPYC, 2 cores), since its
batches grew past the size a CPU gains from."""

CPU_BATCH_TOKENS = 4096
"""Padded tokens per batch on a CPU where the operator set none. A CPU gains no throughput past a few
thousand tokens per forward pass (measured on MiniLM-L6: 4096 tokens ran at 4.3k tokens/s, 8192 at
3.6k), while every extra token adds latency for everyone in the batch."""


def pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(requested: str, device: str, model_type: str = "") -> str:
    """float32 on CPU; on accelerators float16, or bfloat16 for families that overflow float16."""
    no_float16 = not family_of(model_type).float16
    if requested == "float16" and no_float16:
        raise ModelLoadError(
            f"{model_type} models do not run in float16 (their activations overflow); use float32 or bfloat16"
        )
    if requested in _DTYPES:
        return requested
    if device == "cpu":
        return "float32"
    return "bfloat16" if no_float16 else "float16"


def wants_compile(setting: str, device: str) -> bool:
    """ModelSpec.compile on `device`: "auto" compiles on CUDA only; elsewhere a compile costs more
    start-up than it saves (CPU inductor: ~15-25 s per length bucket even for a tiny model)."""
    if setting == "auto":
        return device.startswith("cuda")
    return setting == "on"


def set_threads(spec: ModelSpec) -> None:
    """Torch's intra-op threads: the spec's, else torch's own count capped by the CPU budget (models.cpus)."""
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    elif (budget := cpu_budget()) < torch.get_num_threads():  # torch counts cores, not a container's quota
        torch.set_num_threads(budget)


def load_st_model(spec: ModelSpec, source: str, model_class: Any) -> tuple[Any, str, str]:
    """A sentence-transformers model (SentenceTransformer or CrossEncoder) in eval mode on the spec's
    device and dtype, with the spec's thread count (default: torch's, at most the CPU budget, models.cpus); the
    device and dtype it got.

    Off the CPU the weights load straight in the target dtype (no float32 copy on the accelerator),
    where the folder's config.json names the family; transformers picks its attention
    implementation itself: "sdpa" wherever the model class supports it (BERT, XLM-R and Gemma3 in
    4.57, Gemma3's bidirectional masks included)."""
    import torch

    set_threads(spec)
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device, _folder_model_type(source))
    kwargs = {"model_kwargs": {"dtype": getattr(torch, dtype)}} if dtype != "float32" else {}
    try:
        model = model_class(source, device=device, **kwargs)
    except Exception as exc:  # the library raises many types for a bad folder or an unreachable hub
        raise ModelLoadError(f"cannot load {spec.kind} model {spec.id!r} from {source!r}: {exc}") from exc
    modules = list(model)
    # The loaded config decides (a hub id has no local config.json to read beforehand).
    dtype = pick_dtype(spec.dtype, device, getattr(config_of(modules[0]) if modules else None, "model_type", ""))
    if model.dtype != getattr(torch, dtype):
        model.to(getattr(torch, dtype))
    model.eval()
    return model, device, dtype


def _folder_model_type(source: str) -> str:
    try:
        return str(json.loads((Path(source) / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def compiled_forward(spec: ModelSpec, device: str, modules: Sequence[Any], output: str, max_length: int) -> Any:
    """The compiled module chain when the spec compiles on `device` (models.compiled), else None."""
    if not wants_compile(spec.compile, device):
        return None
    from embedserve.models.compiled import CompiledForward

    return CompiledForward(modules, output, max_length=max_length, required=spec.compile == "on")


def packed_runner(
    spec: ModelSpec, model: Any, *, unsupported: Callable[[Any], str | None], build: Callable[[Any], Any]
) -> Any:
    """`build(model)`, the packed runner of a transformers model (models.packed_encoder), unless the
    spec turns packing off or `unsupported(model)` gives a reason; then None (the padded forward)."""
    if spec.packing == "off":
        return None
    reason = unsupported(model)
    if reason is not None:
        log.debug("model runs padded", extra={"model": spec.id, "reason": reason})
        return None
    return build(model)


def config_of(first_module: Any) -> Any:
    model = getattr(first_module, "auto_model", None)
    return getattr(model, "config", None)


def first_module_limit(first_module: Any) -> int | None:
    """The position limit of a sentence-transformers Transformer module's model."""
    return position_limit(config_of(first_module))


def vocab_size_of(first_module: Any) -> int | None:
    return getattr(config_of(first_module), "vocab_size", None)


def release_modules(runner: Any) -> None:
    """Drops a torch runner's modules and compiled/packed forwards, and the accelerator's cached blocks."""
    import torch

    for name in ("_modules", "_compiled", "_packed", "_sparse_head"):
        if hasattr(runner, name):
            setattr(runner, name, None)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
