"""manifest.json: where an exported folder came from and how good it is, so a served INT8 model can
always be traced to its source, its settings and the accuracy it was accepted with."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from embedserve.models.exported import MANIFEST_FILE

_LIBRARIES = ("torch", "transformers", "sentence-transformers", "optimum", "optimum-onnx", "onnxruntime", "onnx")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def read(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
