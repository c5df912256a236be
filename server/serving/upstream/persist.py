"""Writes run-time endpoint changes back into the models file, so they survive a restart.

Round-trip YAML (ruamel) keeps the operator's comments and layout; the file is replaced atomically.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ruamel.yaml import YAML

from embedserve.server.serving.upstream.config import EndpointSpec


def save_endpoints(path: Path, model_id: str, endpoints: Sequence[EndpointSpec]) -> None:
    yaml = YAML()  # round-trip mode
    yaml.preserve_quotes = True
    with open(path, encoding="utf-8") as f:
        data = yaml.load(f)
    entry = next((e for e in data["models"] if e.get("id") == model_id), None)
    if entry is None:
        raise KeyError(f"{model_id!r} is not an entry of {path}")
    entry["endpoints"] = [e.url if e.weight == 1 else {"url": e.url, "weight": e.weight} for e in endpoints]
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.dump(data, f)
        os.chmod(temp, path.stat().st_mode & 0o777)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
