"""The folder format `embedserve quantize` writes and the ONNX runners read: its one home.

A folder holds model.onnx (and model_int8.onnx), the tokenizer files, dense_<i>.npz and CONFIG_FILE:
the settings a torch-free runner needs to finish an embedding (pooling, Dense layers, normalize,
token limit, prompts) and which graph files exist. FORMAT is bumped when a reader of the old format
would misread a new folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.errors import ModelLoadError

CONFIG_FILE = "embedserve.json"
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


def write_config(folder: Path, config: dict[str, Any]) -> None:
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "format": FORMAT}, indent=2, ensure_ascii=False) + "\n")


def peek_config(folder: Path) -> dict[str, Any]:
    """The folder's settings if it has readable ones, else {} (for guessing a source's kind and backend)."""
    try:
        value = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
