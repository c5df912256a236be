"""What runs around the ONNX graph: read from the folder's own sentence-transformers modules, and
replayed in numpy.

The graph holds only the transformer; pooling, Dense layers and Normalize are written to
`embedserve.json` (and `dense_*.npz`) so a torch-free runner can finish the embedding. The numpy
replay here is what export verification and the accuracy report use, so they check exactly what a
server would compute from the exported folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedserve.models.heads import COLBERT_HEAD, SPARSE_HEAD, LinearHead, unused_token_ids
from embedserve.models.pooling import POOLING_MODES, DenseLayer, l2_normalize, load_dense, sentence_embeddings

# torch activation class name -> the name embedserve.json uses
ACTIVATIONS = {"Identity": "identity", "Tanh": "tanh", "ReLU": "relu", "GELU": "gelu", "Sigmoid": "sigmoid"}


class ExportError(RuntimeError):
    """The folder cannot be exported faithfully (unsupported module, failed parity check, ...)."""


LLM_RERANKERS_NOT_EXPORTED = (
    "the ONNX export does not take LLM (yes/no) rerankers yet: their graph would need the last position's two "
    "answer logits as its output, and their INT8 a gate of its own; PyTorch serves them"
)
"""Why an LLM reranker (models.yes_no) is served by torch and refused by `embedserve quantize`."""


@dataclass(slots=True)
class Pipeline:
    """The steps after the transformer, for an embedder (rerankers have none)."""

    pooling_mode: str
    include_prompt: bool
    dense: list[DenseLayer] = field(default_factory=list)
    normalize: bool = False


def read_embed_pipeline(model: Any) -> Pipeline:
    """Pooling, Dense and Normalize from a loaded `SentenceTransformer`; anything else is refused
    rather than silently dropped (the exported folder would embed differently)."""
    modules = list(model)
    names = [type(m).__name__ for m in modules]
    if not names or names[0] != "Transformer" or not hasattr(modules[0], "auto_model"):
        raise ExportError(f"the pipeline must start with a Hugging Face Transformer module, not {names[:1]}")
    if len(names) < 2 or names[1] != "Pooling":
        raise ExportError(f"the Transformer must be followed by Pooling; the pipeline is {names}")
    pooling = modules[1]
    mode = pooling.pooling_mode
    if isinstance(mode, (tuple, list)):
        if len(mode) != 1:
            raise ExportError(f"combined pooling modes {tuple(mode)} are not supported")
        mode = mode[0]
    if mode not in POOLING_MODES:
        raise ExportError(f"pooling mode {mode!r} is not supported")
    pipeline = Pipeline(pooling_mode=str(mode), include_prompt=bool(pooling.include_prompt))
    rest = modules[2:]
    for i, module in enumerate(rest):
        name = type(module).__name__
        if name == "Dense":
            act = ACTIVATIONS.get(type(module.activation_function).__name__)
            if act is None:
                raise ExportError(f"Dense activation {type(module.activation_function).__name__} is not supported")
            linear = module.linear
            bias = linear.bias.detach().float().cpu().numpy() if linear.bias is not None else None
            pipeline.dense.append(DenseLayer(linear.weight.detach().float().cpu().numpy(), bias, act))
        elif name == "Normalize" and i == len(rest) - 1:
            pipeline.normalize = True
        else:
            raise ExportError(f"module {name} (position {i + 2}) is not supported; the pipeline is {names}")
    return pipeline


def write_dense(pipeline: Pipeline, out: Path) -> list[dict[str, str]]:
    """One `dense_<i>.npz` per Dense layer; returns the `dense` entries of embedserve.json."""
    entries = []
    for i, layer in enumerate(pipeline.dense):
        name = f"dense_{i}.npz"
        arrays = {"weight": np.ascontiguousarray(layer.weight, dtype=np.float32)}
        if layer.bias is not None:
            arrays["bias"] = np.ascontiguousarray(layer.bias, dtype=np.float32)
        np.savez(out / name, **arrays)
        entries.append({"file": name, "activation": layer.activation})
    return entries


def write_heads(source: Path, tokenizer: Any, out: Path) -> dict[str, dict[str, Any]]:
    """bge-m3's extra heads, where the source folder has them (`sparse_linear.pt`, `colbert_linear.pt`), as
    `models.heads` npz files; returns the `heads` entry of embedserve.json. Small Linear layers: they stay
    float32 in an INT8 folder too, applied in numpy after the graph."""
    import torch

    entries: dict[str, dict[str, Any]] = {}
    for output, name in (("sparse", SPARSE_HEAD), ("multivector", COLBERT_HEAD)):
        path = source / f"{name}.pt"
        if not path.is_file():
            continue
        state = torch.load(path, map_location="cpu", weights_only=True)
        weight = state["weight"].float().numpy()
        bias = state["bias"].float().numpy() if "bias" in state else np.zeros(len(weight), dtype=np.float32)
        LinearHead(np.ascontiguousarray(weight), np.ascontiguousarray(bias)).save(out / f"{name}.npz")
        entries[output] = {"file": f"{name}.npz"}
    if "sparse" in entries:
        entries["sparse"]["unused_ids"] = list(unused_token_ids(tokenizer))
    return entries


def load_pipeline(folder: Path, config: dict[str, Any]) -> Pipeline | None:
    """The pipeline back from an exported folder's embedserve.json (None for rerankers)."""
    if config["pooling"] is None:
        return None
    dense = load_dense(folder, config["dense"])
    return Pipeline(config["pooling"]["mode"], config["pooling"]["include_prompt"], dense, config["normalize"])


def finish(hidden: np.ndarray, mask: np.ndarray, pipeline: Pipeline) -> np.ndarray:
    """Sentence embeddings from the graph's last_hidden_state: the ONNX runner's pooling and Dense
    layers (`models.pooling`), then Normalize."""
    x = sentence_embeddings(hidden, mask, pipeline.pooling_mode, pipeline.dense)
    if pipeline.normalize:
        x = l2_normalize(x)
    return x.astype(np.float32)
