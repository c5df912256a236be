"""How much memory a model will take, known before it is loaded: what the memory budget
(server.serving.residency) decides on.

The estimate is its weight files' bytes: a model's weights are most of what it holds, and the files say so
before anything is loaded. The RSS growth measured while it loads (`LoadedModel.memory_bytes`) is no better
a guide: the first load in a process also pays for importing its runtime (hundreds of MB for torch), and loads
run in threads at once, so each one's growth includes the others'. It is used only where no file says
anything (a hub id not yet downloaded).
"""

from __future__ import annotations

from pathlib import Path

from embedserve.models.sources import resolve_source
from embedserve.models.spec import ModelSpec

_ONNX = (".onnx", ".onnx_data", ".onnx.data")
_TORCH = (".safetensors",)
_TORCH_LEGACY = (".bin",)
_HEADS = (".pt",)  # bge-m3's sparse and colbert heads: loaded beside the encoder by every backend


def weight_bytes(spec: ModelSpec) -> int:
    """The bytes of the weight files `spec`'s backend loads from its folder: its ONNX graph for an ONNX backend
    (an `embedserve quantize` folder holds both: fp32 for `onnx`, INT8 for `onnx-int8`), else safetensors (pytorch_model.bin where a folder has no safetensors); its extra heads with either. 0 where
    the source is no local folder."""
    folder = Path(resolve_source(spec.source))
    if not folder.is_dir():
        return 0
    sizes: dict[str, int] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            kind = _kind(path.name)
            if kind is not None:
                sizes[kind] = sizes.get(kind, 0) + path.stat().st_size
    heads = sizes.get("heads", 0)
    if spec.backend == "onnx-int8" and sizes.get("onnx_int8"):
        return sizes["onnx_int8"] + heads
    if spec.backend.startswith("onnx") and sizes.get("onnx"):
        return sizes["onnx"] + heads
    # torch, or `auto` (its ONNX export is the same weights as the folder's own)
    return (sizes.get("torch") or sizes.get("torch_legacy") or sizes.get("onnx", 0)) + heads


def _kind(name: str) -> str | None:
    if "int8" in name and name.endswith(_ONNX):
        return "onnx_int8"
    for kind, suffixes in (("onnx", _ONNX), ("torch", _TORCH), ("torch_legacy", _TORCH_LEGACY), ("heads", _HEADS)):
        if name.endswith(suffixes):
            return kind
    return None
