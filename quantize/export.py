"""`export_model`: a sentence-transformers (or cross-encoder) folder -> an embedserve ONNX folder.

The folder layout is a contract with the ONNX runner (`models/onnx_runner.py`): model.onnx (the
transformer only), model_packed.onnx where the family packs several texts a row (quantize.packed_graph), the HF
tokenizer files, dense_<i>.npz, embedserve.json and manifest.json.
Every export is verified against PyTorch before it is kept; optimum-onnx's exporter is tried first
and `torch.onnx.export` of the model itself is the fallback (for families optimum does not know,
or exports wrongly, e.g. with a causal mask where the model attends both ways).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tokenizers import Tokenizer

from embedserve.models.exported import CONFIG_FILE, FORMAT, MANIFEST_FILE, write_config
from embedserve.models.families import family_of
from embedserve.models.heads import COLBERT_HEAD, SPARSE_HEAD
from embedserve.models.sources import guess_kind, resolve_source
from embedserve.models.torch_loading import first_module_limit
from embedserve.models.torch_rerank import label_names
from embedserve.models.yes_no import is_causal_lm
from embedserve.quantize.graph import SHARED_WEIGHTS, clear_graph, export_with_optimum, export_with_torch
from embedserve.quantize.manifest import library_versions, now
from embedserve.quantize.manifest import write as write_manifest
from embedserve.quantize.packed_graph import PACKED_FILE, export_packed
from embedserve.quantize.pipeline import (
    LLM_RERANKERS_NOT_EXPORTED,
    ExportError,
    read_embed_pipeline,
    write_dense,
    write_heads,
)
from embedserve.quantize.verify import (
    MIN_COSINE,
    verification_pairs,
    verification_texts,
    verify_embedder,
    verify_reranker,
)

log = logging.getLogger("embedserve.quantize")

Exporter = Literal["auto", "optimum", "torch"]


@dataclass(slots=True)
class Exported:
    out: Path
    torch_model: Any  # the SentenceTransformer / CrossEncoder the export was verified against
    manifest: dict[str, Any]


def export_model(
    source: str | Path,
    out: Path,
    *,
    kind: str | None = None,
    opset: int | None = None,
    exporter: Exporter = "auto",
) -> Path:
    """Writes model.onnx, the tokenizer, dense_*.npz, embedserve.json and manifest.json to `out`
    and returns `out`. Raises `ExportError` when no exporter reproduces PyTorch's output.
    `exporter` forces one exporter (tests use it to check the torch fallback on every family)."""
    return export(source, out, kind=kind, opset=opset, exporter=exporter).out


def export(
    source: str | Path,
    out: Path,
    *,
    kind: str | None = None,
    opset: int | None = None,
    exporter: Exporter = "auto",
    min_cosine: float = MIN_COSINE,
) -> Exported:
    """`export_model`, keeping the loaded torch model for callers that compare against it. An embedder's export is
    kept when every token's and text's cosine with PyTorch's is at least `min_cosine`."""
    import torch

    torch.manual_seed(0)
    src = resolve_source(str(source))
    kind = kind or guess_kind(src)
    if kind not in ("embed", "rerank"):
        raise ValueError(f"kind must be 'embed' or 'rerank', not {kind!r}")
    if kind == "rerank" and is_causal_lm(src):
        raise ExportError(LLM_RERANKERS_NOT_EXPORTED)
    loaded = _load_embedder(src) if kind == "embed" else _load_reranker(src)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)  # stale graphs or dense layers would not match the new export
    hf_model, tokenizer, config = loaded["hf_model"], loaded["tokenizer"], loaded["config"]
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if config["with_type_ids"] else [])
    output = "last_hidden_state" if kind == "embed" else "logits"
    task = "feature-extraction" if kind == "embed" else "text-classification"

    tokenizer.save_pretrained(str(out))
    config["dense"] = write_dense(loaded["pipeline"], out) if kind == "embed" else []
    if kind == "embed" and (heads := write_heads(Path(src), tokenizer, out)):
        config["heads"] = heads
    write_config(out, config)

    if kind == "embed":
        sliding = getattr(hf_model.config, "sliding_window", None)
        counter = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        counter.no_truncation()  # tokenizer.json may carry its own, shorter truncation
        texts = verification_texts(
            config["max_length"], sliding, lambda text: len(counter.encode(text, add_special_tokens=False).ids)
        )

        def verify() -> dict[str, float]:
            return verify_embedder(out, loaded["model"], texts, min_cosine)

        def verify_packed() -> dict[str, float]:
            return verify_embedder(out, loaded["model"], texts, min_cosine, file=PACKED_FILE)
    else:
        pairs = verification_pairs()

        def verify() -> dict[str, float]:
            return verify_reranker(out, loaded["model"], pairs)

    attempts: list[str] = ["optimum", "torch"] if exporter == "auto" else [exporter]
    failures: list[str] = []
    used = figures = None
    for name in attempts:
        try:
            if name == "optimum":
                export_with_optimum(hf_model, out / "model.onnx", task=task, inputs=inputs, output=output, opset=opset)
            else:
                export_with_torch(
                    hf_model, out / "model.onnx", inputs=inputs, output=output, opset=opset, pad_id=config["pad_id"]
                )
            figures = verify()
            used = name
            break
        except Exception as exc:  # any exporter failure: try the next, report all if none works
            following = attempts[attempts.index(name) + 1 :]
            if following:  # not a failure yet: say what happens instead
                log.info("optimum cannot export this model (%s); exporting with %s instead", exc, following[0])
            failures.append(f"{name}: {exc}")
    if used is None or figures is None:
        _clear(out)  # leave nothing a server could mistake for a working export
        raise ExportError(f"cannot export {src!r} faithfully: " + "; ".join(failures))

    packed = _export_packed(out, hf_model, config, verify_packed) if kind == "embed" else None

    manifest = {
        "source": str(source),
        "resolved_source": src,
        "kind": kind,
        "model_type": config["model_type"],
        "export": {
            "exporter": used,
            "failed_exporters": failures,
            "opset": _opset(out / "model.onnx"),
            "verification": figures,
            "timestamp": now(),
        },
        **({"packed": packed} if packed is not None else {}),
        "versions": library_versions(),
    }
    write_manifest(out, manifest)
    log.info("exported %s to %s with %s", src, out, used)
    return Exported(out, loaded["model"], manifest)


def _export_packed(
    out: Path, hf_model: Any, config: dict[str, Any], verify: Callable[[], dict[str, float]]
) -> dict[str, Any] | None:
    """An embedder's packed graph beside model.onnx (quantize.packed_graph) where the family has one and it
    reproduces PyTorch as model.onnx does; listed in the config's files as `packed`. What happened, for the manifest
    (None: not tried, the family has none). A failure leaves model.onnx serving as before. Both graphs hold the
    weights until the folder is finished (quantize.graph.share_weights)."""
    if not family_of(config["model_type"]).packed_graph:
        return None
    try:
        export_packed(hf_model, out / PACKED_FILE, with_type_ids=config["with_type_ids"])
        figures = verify()
    except Exception as exc:  # any exporter or verification failure: the padded graph serves
        clear_graph(out / PACKED_FILE)
        log.warning("the packed graph is not used: %s", exc)
        return {"failed": f"{type(exc).__name__}: {exc}"}
    config["files"]["packed"] = PACKED_FILE
    write_config(out, config)
    return {"file": PACKED_FILE, "verification": figures}


def _clear(out: Path) -> None:
    for graph in ("model.onnx", "model_int8.onnx", PACKED_FILE):
        clear_graph(out / graph)
    heads = [out / f"{name}.npz" for name in (SPARSE_HEAD, COLBERT_HEAD)]
    for stale in [out / SHARED_WEIGHTS, *out.glob("dense_*.npz"), *heads, out / CONFIG_FILE, out / MANIFEST_FILE]:
        stale.unlink(missing_ok=True)


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _tokenizer_settings(tokenizer: Any, hf_config: Any) -> dict[str, Any]:
    if tokenizer is None or not tokenizer.is_fast:
        raise ExportError("the model needs a fast (tokenizer.json) tokenizer")
    return {
        "pad_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        "with_type_ids": "token_type_ids" in tokenizer.model_input_names,
        "truncation_side": tokenizer.truncation_side,
        "vocab_size": min(len(tokenizer), getattr(hf_config, "vocab_size", None) or len(tokenizer)),
    }


def _max_length(declared: int | None, first_module: Any) -> int:
    limits = [x for x in (declared, first_module_limit(first_module)) if x]
    if not limits:
        raise ExportError("the model declares no sequence length limit")
    return int(min(limits))


def _prompts(model: Any) -> tuple[dict[str, str], str | None]:
    prompts = {k: v for k, v in (model.prompts or {}).items() if v}
    default = model.default_prompt_name
    return prompts, default if default in prompts else None


def _load(cls: Any, src: str) -> Any:
    """The folder as a float32 sentence-transformers model of class `cls`, in eval mode."""
    try:
        model = cls(src, device="cpu")
    except Exception as exc:  # the library raises many types for a bad folder
        raise ExportError(f"cannot load {src!r} as a {cls.__name__}: {exc}") from exc
    return model.float().eval()


def _config(model: Any, first: Any, kind: str, **head: Any) -> tuple[Any, dict[str, Any]]:
    """The transformer and embedserve.json for either kind; `head` holds what differs (pooling, normalize,
    dimension, num_labels). Caps the model's max_seq_length at the limit it records."""
    hf_model = first.auto_model
    max_length = _max_length(model.max_seq_length, first)
    model.max_seq_length = max_length
    prompts, default = _prompts(model)
    config = {
        "format": FORMAT,
        "kind": kind,
        "model_type": hf_model.config.model_type,
        "max_length": max_length,
        **_tokenizer_settings(model.tokenizer, hf_model.config),
        "dense": [],
        **head,
        "prompts": prompts,
        "default_prompt": default,
        "files": {"fp32": "model.onnx", "int8": None},
    }
    return hf_model, config


def _load_embedder(src: str) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    model = _load(SentenceTransformer, src)
    pipeline = read_embed_pipeline(model)
    hf_model, config = _config(
        model,
        model[0],
        "embed",
        pooling={"mode": pipeline.pooling_mode, "include_prompt": pipeline.include_prompt},
        normalize=pipeline.normalize,
        dimension=int(model.get_embedding_dimension()),
        num_labels=None,
    )
    return {"model": model, "hf_model": hf_model, "tokenizer": model.tokenizer, "config": config, "pipeline": pipeline}


def _load_reranker(src: str) -> dict[str, Any]:
    from sentence_transformers import CrossEncoder

    model = _load(CrossEncoder, src)
    modules = list(model)
    first = modules[0] if modules else None
    if (
        len(modules) != 1
        or getattr(first, "transformer_task", None) != "sequence-classification"
        or set(getattr(first, "modality_config", {})) != {"text"}
    ):
        raise ExportError(f"{src!r} is not a text sequence-classification cross-encoder")
    num_labels = int(model.num_labels)
    hf_model, config = _config(
        model,
        first,
        "rerank",
        pooling=None,
        normalize=False,
        dimension=num_labels,
        num_labels=num_labels,
        labels=list(label_names(getattr(first.auto_model, "config", None), num_labels)),
    )
    return {"model": model, "hf_model": hf_model, "tokenizer": model.tokenizer, "config": config, "pipeline": None}
