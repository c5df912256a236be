"""PyTorch runner: the folder's own sentence-transformers modules, driven batch by batch.

sentence-transformers loads the pipeline (transformer, pooling, dense, normalize) from the
folder's configuration; we skip `encode()` and call the modules on batches the batcher formed.
A trailing Normalize module is left out so each request can choose normalization.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ModelLoadError
from models.runner import ModelInfo, SparseVector, Tokens
from models.spec import ModelSpec
from models.tokenizer import TextTokenizer

_DTYPES = {"float32", "float16", "bfloat16"}


def pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


# Families whose activations overflow float16: they run in float32 or bfloat16 only.
_NO_FLOAT16 = ("gemma3", "gemma3_text")


def pick_dtype(requested: str, device: str, model_type: str = "") -> str:
    """float32 on CPU; on accelerators float16, or bfloat16 for families that overflow float16."""
    if requested == "float16" and model_type in _NO_FLOAT16:
        raise ModelLoadError(
            f"{model_type} models do not run in float16 (their activations overflow); use float32 or bfloat16"
        )
    if requested in _DTYPES:
        return requested
    if device == "cpu":
        return "float32"
    return "bfloat16" if model_type in _NO_FLOAT16 else "float16"


def load_st_model(spec: ModelSpec, source: str, model_class: Any) -> tuple[Any, str]:
    """A sentence-transformers model (SentenceTransformer or CrossEncoder) on the spec's device,
    with the spec's thread count; the device it went to."""
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = pick_device(spec.device)
    try:
        return model_class(source, device=device), device
    except Exception as exc:  # the library raises many types for a bad folder or an unreachable hub
        raise ModelLoadError(f"cannot load {spec.kind} model {spec.id!r} from {source!r}: {exc}") from exc


class TorchEmbeddingRunner:
    def __init__(self, spec: ModelSpec, source: str) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self._torch = torch
        model, device = load_st_model(spec, source, SentenceTransformer)
        config = _config(model[0])
        dtype = pick_dtype(spec.dtype, device, getattr(config, "model_type", ""))
        if dtype != "float32":
            model.to(getattr(torch, dtype))
        model.eval()

        modules = list(model)
        normalized = bool(modules) and type(modules[-1]).__name__ == "Normalize"
        self._modules = modules[:-1] if normalized else modules
        self._device = torch.device(device)

        first = modules[0]
        hf_tokenizer = model.tokenizer
        max_length = min(x for x in (spec.max_length, model.max_seq_length, _position_limit(first)) if x)
        first.max_seq_length = max_length
        self.tokenizer = TextTokenizer(
            hf_tokenizer.backend_tokenizer,
            max_length=max_length,
            pad_id=hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0,
            vocab_size=min(len(hf_tokenizer), _vocab_size(first) or len(hf_tokenizer)),
            with_type_ids="token_type_ids" in hf_tokenizer.model_input_names,
        )
        self._sparse_head = _sparse_head(source, first, dtype, self._device)
        # bge-m3 leaves these out of its lexical weights (FlagEmbedding's `unused_tokens`).
        self._unused_ids = np.array(
            sorted(
                {
                    i
                    for i in (
                        hf_tokenizer.cls_token_id,
                        hf_tokenizer.eos_token_id,
                        hf_tokenizer.pad_token_id,
                        hf_tokenizer.unk_token_id,
                    )
                    if i is not None
                }
            ),
            dtype=np.int64,
        )
        self.info = ModelInfo(
            id=spec.id,
            kind=spec.kind,
            dimension=int(model.get_embedding_dimension()),
            max_length=max_length,
            backend="torch",
            device=str(self._device),
            dtype=dtype,
            normalized=normalized,
            sparse=self._sparse_head is not None,
            prompts={**{k: v for k, v in (model.prompts or {}).items() if v}, **spec.prompts},
            default_prompt=spec.default_prompt or model.default_prompt_name,
        )

    def tokenize(self, texts: Sequence[str], *, prompt: str = "", truncate: bool = True) -> list[Tokens]:
        return self.tokenizer.encode(texts, prompt=prompt, truncate=truncate)

    def tokenize_ids(self, ids: Sequence[Sequence[int]], *, truncate: bool = True) -> list[Tokens]:
        return self.tokenizer.encode_ids(ids, truncate=truncate)

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        torch = self._torch
        arrays = self.tokenizer.pad(batch)
        with torch.inference_mode():
            features = to_device(arrays, self._device)
            for module in self._modules:
                features = module(features)
            return features["sentence_embedding"].float().cpu().numpy()

    def run_sparse(self, batch: Sequence[Tokens]) -> list[SparseVector]:
        """bge-m3's lexical weights: relu(sparse_linear(last hidden state)) per token, the largest
        weight per token id, special tokens left out."""
        if self._sparse_head is None:
            raise ValueError(f"model {self.info.id!r} has no sparse head")
        torch = self._torch
        arrays = self.tokenizer.pad(batch)
        with torch.inference_mode():
            features = to_device(arrays, self._device)
            hidden = self._modules[0](features)["token_embeddings"]
            weights = torch.relu(self._sparse_head(hidden)).squeeze(-1).float().cpu().numpy()
        vectors = []
        for row, tokens in zip(weights, batch):
            ids = np.asarray(tokens.ids, dtype=np.int64)
            values = row[: len(ids)]
            keep = (values > 0) & ~np.isin(ids, self._unused_ids)
            indices, where = np.unique(ids[keep], return_inverse=True)
            best = np.zeros(len(indices), dtype=np.float32)
            np.maximum.at(best, where, values[keep])
            vectors.append(SparseVector(indices, best))
        return vectors


def _sparse_head(source: str, first_module: Any, dtype: str, device: Any) -> Any:
    """bge-m3's `sparse_linear.pt` (a Linear(hidden, 1) state dict) when the folder has one."""
    import torch

    path = Path(source) / "sparse_linear.pt"
    if not path.is_file():
        return None
    hidden = first_module.auto_model.config.hidden_size
    head = torch.nn.Linear(hidden, 1)
    head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return head.to(device=device, dtype=getattr(torch, dtype)).eval()


def to_device(arrays: dict[str, np.ndarray], device: Any) -> dict[str, Any]:
    """A padded batch's arrays as tensors on the model's device (call under inference_mode)."""
    import torch

    return {name: torch.from_numpy(array).to(device, non_blocking=True) for name, array in arrays.items()}


def _config(first_module: Any) -> Any:
    model = getattr(first_module, "auto_model", None)
    return getattr(model, "config", None)


def _position_limit(first_module: Any) -> int | None:
    config = _config(first_module)
    limit = getattr(config, "max_position_embeddings", None)
    if limit and getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # RoBERTa-style position ids start after the padding index
    return limit


def _vocab_size(first_module: Any) -> int | None:
    return getattr(_config(first_module), "vocab_size", None)
