"""The folder format `embedserve quantize` writes and the ONNX runners read: its one home.

A folder holds model.onnx (and model_int8.onnx, and model_packed.onnx: several texts a row, models.packed_rows),
the tokenizer files, dense_<i>.npz and CONFIG_FILE: the settings a torch-free runner needs to finish an embedding
(pooling, Dense layers, normalize, token limit, prompts), which graph files exist (`files`: fp32, int8, packed),
and bge-m3's extra heads (`heads`: sparse and multivector, each a `models.heads.LinearHead` npz) where the model
has them. FORMAT is bumped when a reader of the old format
would misread a new folder. MANIFEST_FILE (`quantize.manifest`) records how the folder was made; a
runner reads only its INT8 numerics (`int8_numerics`) from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedserve.models.errors import ModelLoadError
from embedserve.models.heads import LinearHead
from embedserve.models.isa import weight_bits

CONFIG_FILE = "embedserve.json"
MANIFEST_FILE = "manifest.json"
FORMAT = 1


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's settings (ModelLoadError when it is not a folder of this format)."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{folder} is not an ONNX model folder written by `embedserve quantize` (no readable {CONFIG_FILE}): {exc}"
        ) from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise ModelLoadError(f"{folder / CONFIG_FILE}: unsupported format {found!r}")
    return config


@dataclass(frozen=True, slots=True)
class FolderHeads:
    """bge-m3's extra heads, where the folder has them (its config's `heads`: each head's npz file, and the
    token ids the lexical weights leave out)."""

    sparse: LinearHead | None = None
    colbert: LinearHead | None = None
    unused_ids: tuple[int, ...] = ()


def read_heads(folder: Path, config: dict[str, Any]) -> FolderHeads:
    heads = config.get("heads") or {}
    try:
        sparse, colbert = (
            LinearHead.load(folder / heads[name]["file"]) if name in heads else None
            for name in ("sparse", "multivector")
        )
        unused = tuple(int(i) for i in (heads.get("sparse") or {}).get("unused_ids", ()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{folder / CONFIG_FILE}: cannot read the heads it lists ({exc})") from exc
    return FolderHeads(sparse, colbert, unused)


def write_config(folder: Path, config: dict[str, Any]) -> None:
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "format": FORMAT}, indent=2, ensure_ascii=False) + "\n")


def peek_config(folder: Path) -> dict[str, Any]:
    """The folder's settings if it has readable ones, else {} (for guessing a source's kind and backend)."""
    try:
        value = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def int8_numerics(folder: Path) -> tuple[str, int] | None:
    """(the target ISA, the weights' bits) the folder's INT8 graph was built with, from its manifest;
    None when the manifest does not say (a folder not written by `embedserve quantize`)."""
    try:
        quantization = json.loads((folder / MANIFEST_FILE).read_text()).get("quantization") or {}
        numerics = (
            str(quantization["target"]),
            int(quantization.get("weight_bits") or weight_bits(bool(quantization["reduce_range"]))),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return numerics
