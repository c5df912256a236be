"""The bench's embedserve contenders: each serves the model folder as its name says (backend, packing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.servers import contender
from embedserve.server.config.models_file import load_models_file


@pytest.mark.parametrize(
    ("name", "backend", "packing"),
    [
        ("embedserve-padded", "auto", "off"),
        ("embedserve-torch", "torch", "auto"),
        ("embedserve-torch-padded", "torch", "off"),
    ],
)
def test_the_padded_and_torch_contenders_serve_the_folder_with_their_backend_and_packing(
    name: str, backend: str, packing: str, tiny_bert_dir: Path
) -> None:
    spec = contender(name, 1, "m", str(tiny_bert_dir), [], {})
    models_file = spec.argv[spec.argv.index("--models") + 1]
    (entry,) = load_models_file(models_file)
    assert (entry.id, entry.source, entry.backend, entry.packing) == ("m", str(tiny_bert_dir), backend, packing)
