"""PyTorch runner: the folder's own sentence-transformers modules, driven batch by batch.

sentence-transformers loads the pipeline (transformer, pooling, dense, normalize) from the
folder's configuration; we skip `encode()` and call the modules on batches the batcher formed.
A trailing Normalize module is left out so each request can choose normalization.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ModelLoadError
from models.packed_encoder import packed_model, packing_unsupported
from models.runner import ModelInfo, SparseVector, Tokens
from models.spec import ModelSpec
from models.threads import cpu_thread_share
from models.tokenizer import TextTokenizer
from models.transfer import to_device, to_host

log = logging.getLogger("embedserve.models")

WARM_TEXT = "A longer sentence warms up the kernels for a few more positions of the sequence."

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


def wants_compile(setting: str, device: str) -> bool:
    """ModelSpec.compile on `device`: "auto" compiles on CUDA only; elsewhere a compile costs more
    start-up than it saves (CPU inductor: ~15-25 s per length bucket even for a tiny model)."""
    if setting == "auto":
        return device.startswith("cuda")
    return setting == "on"


def load_st_model(spec: ModelSpec, source: str, model_class: Any) -> tuple[Any, str, str]:
    """A sentence-transformers model (SentenceTransformer or CrossEncoder) in eval mode on the spec's
    device and dtype, with the spec's thread count; the device and dtype it got.

    Off the CPU the weights load straight in the target dtype (no float32 copy on the accelerator),
    where the folder's config.json names the family; transformers picks its attention
    implementation itself: "sdpa" wherever the model class supports it (BERT, XLM-R and Gemma3 in
    4.57, Gemma3's bidirectional masks included)."""
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device, _folder_model_type(source))
    kwargs = {"model_kwargs": {"dtype": getattr(torch, dtype)}} if dtype != "float32" else {}
    try:
        model = model_class(source, device=device, **kwargs)
    except Exception as exc:  # the library raises many types for a bad folder or an unreachable hub
        raise ModelLoadError(f"cannot load {spec.kind} model {spec.id!r} from {source!r}: {exc}") from exc
    modules = list(model)
    # The loaded config decides (a hub id has no local config.json to read beforehand).
    dtype = pick_dtype(spec.dtype, device, getattr(_config(modules[0]) if modules else None, "model_type", ""))
    if model.dtype != getattr(torch, dtype):
        model.to(getattr(torch, dtype))
    model.eval()
    return model, device, dtype


def _folder_model_type(source: str) -> str:
    try:
        return str(json.loads((Path(source) / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError, AttributeError):
        return ""


class TorchEmbeddingRunner:
    def __init__(self, spec: ModelSpec, source: str) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self._torch = torch
        model, device, dtype = load_st_model(spec, source, SentenceTransformer)

        modules = list(model)
        normalized = bool(modules) and type(modules[-1]).__name__ == "Normalize"
        self._modules = modules[:-1] if normalized else modules
        self._device = torch.device(device)
        self._threads = cpu_thread_share(self._device)

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
        self._compiled = compiled_forward(spec, device, self._modules, "sentence_embedding", max_length)
        self._packed = None
        if self._compiled is None:
            self._packed = packed_runner(spec, first.auto_model, unsupported=packing_unsupported, build=packed_model)
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

    def warm(self, *, max_batch_tokens: int | None = None, max_batch_size: int | None = None) -> Any:
        """Compiles every length bucket now, at start-up, for batches within the batcher's limits
        (default: its defaults on accelerators); a no-op when not compiling. The compiled forward, or None."""
        if self._compiled is not None:
            sample = self.tokenize([WARM_TEXT])[0]
            self._compiled.warm(
                self.tokenizer, sample, self._device, max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size
            )
        return self._compiled

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        torch = self._torch
        compiled = self._compiled
        arrays = compiled.pad(self.tokenizer, batch) if compiled is not None else None
        with self._threads.batch(), torch.inference_mode():
            if arrays is not None:
                return to_host(compiled(to_device(arrays, self._device))[: len(batch)])
            features = self._token_embeddings(self.tokenizer.pad(batch))
            for module in self._modules[1:]:
                features = module(features)
            return to_host(features["sentence_embedding"])

    def _token_embeddings(self, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        """The transformer's features for a padded batch: run packed (real tokens only) where the
        family allows, else the module's own padded forward. Call under inference_mode."""
        if self._packed is None:
            return self._modules[0](to_device(arrays, self._device))
        mask = self._torch.from_numpy(arrays["attention_mask"]).to(self._device, non_blocking=True)
        return {"attention_mask": mask, "token_embeddings": self._packed(self._packed.pack(arrays), self._device)}

    def run_sparse(self, batch: Sequence[Tokens]) -> list[SparseVector]:
        """bge-m3's lexical weights: relu(sparse_linear(last hidden state)) per token, the largest
        weight per token id, special tokens left out."""
        if self._sparse_head is None:
            raise ValueError(f"model {self.info.id!r} has no sparse head")
        torch = self._torch
        arrays = self.tokenizer.pad(batch)
        with self._threads.batch(), torch.inference_mode():
            hidden = self._token_embeddings(arrays)["token_embeddings"]
            weights = to_host(torch.relu(self._sparse_head(hidden)).squeeze(-1))
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


def compiled_forward(spec: ModelSpec, device: str, modules: Sequence[Any], output: str, max_length: int) -> Any:
    """The compiled module chain when the spec compiles on `device` (models.compiled), else None."""
    if not wants_compile(spec.compile, device):
        return None
    from models.compiled import CompiledForward

    return CompiledForward(modules, output, max_length=max_length, required=spec.compile == "on")


def packed_runner(
    spec: ModelSpec, model: Any, *, unsupported: Callable[[Any], str | None], build: Callable[[Any], Any]
) -> Any:
    """`build(model)`, the packed runner of a transformers model (models.packed_encoder), unless the
    spec turns packing off or `unsupported(model)` gives a reason; then None (the padded forward)."""
    if spec.packing == "off":
        return None
    reason = unsupported(model)
    if reason is not None:
        log.debug("model runs padded", extra={"model": spec.id, "reason": reason})
        return None
    return build(model)


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
