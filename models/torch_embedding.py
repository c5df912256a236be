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

from embedserve.models.backend import CHUNKS, MULTIVECTOR, SPARSE, TOKENS, CpuDefaults, WarmReport
from embedserve.models.heads import colbert_rows, lexical_weights, unused_token_ids
from embedserve.models.packed_encoder import packed_model, packing_unsupported
from embedserve.models.prompts import merged_prompts
from embedserve.models.spec import ModelSpec
from embedserve.models.threads import cpu_thread_share
from embedserve.models.tokenizer import TextTokenizer
from embedserve.models.torch_loading import (
    CPU_BATCH_TOKENS,
    PACKED_BATCHES_COST,
    WARM_TEXT,
    compiled_forward,
    first_module_limit,
    load_st_model,
    packed_runner,
    release_modules,
    vocab_size_of,
)
from embedserve.models.transfer import to_device, to_host
from embedserve.models.types import ModelInfo, SparseVector, Tokens


class TorchEmbeddingRunner:
    cost = PACKED_BATCHES_COST

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
        self.cpu = CpuDefaults(CPU_BATCH_TOKENS, self._threads.batches)

        first = modules[0]
        hf_tokenizer = model.tokenizer
        max_length = min(x for x in (spec.max_length, model.max_seq_length, first_module_limit(first)) if x)
        first.max_seq_length = max_length
        self.tokenizer = TextTokenizer(
            hf_tokenizer.backend_tokenizer,
            max_length=max_length,
            pad_id=hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0,
            vocab_size=min(len(hf_tokenizer), vocab_size_of(first) or len(hf_tokenizer)),
            with_type_ids="token_type_ids" in hf_tokenizer.model_input_names,
        )
        self._sparse_head = _folder_head(source, "sparse_linear.pt", first, dtype, self._device)
        self._colbert_head = _folder_head(source, "colbert_linear.pt", first, dtype, self._device)
        self.outputs: dict[str, Any] = {TOKENS: self.run_tokens}
        if _pools_after(self._modules):
            self.outputs[CHUNKS] = self.run_chunks
        if self._sparse_head is not None:
            self.outputs[SPARSE] = self.run_sparse
        if self._colbert_head is not None:
            self.outputs[MULTIVECTOR] = self.run_multivector
        self._unused_ids = unused_token_ids(hf_tokenizer)
        self._compiled = compiled_forward(spec, device, self._modules, "sentence_embedding", max_length)
        self._packed = None
        if self._compiled is None:
            self._packed = packed_runner(spec, first.auto_model, unsupported=packing_unsupported, build=packed_model)
        self.info = ModelInfo(
            id=spec.id,
            kind=spec.kind,
            width=int(model.get_embedding_dimension()),
            max_length=max_length,
            backend="torch",
            device=str(self._device),
            dtype=dtype,
            normalized=normalized,
            prompts=merged_prompts(model.prompts, spec.prompts),
            default_prompt=spec.default_prompt or model.default_prompt_name,
            output_widths={MULTIVECTOR: self._colbert_head.out_features} if self._colbert_head is not None else {},
        )

    def warm(self, *, max_batch_tokens: int, max_batch_size: int) -> WarmReport | None:
        """Compiles every length bucket now, at start-up, for batches within the batcher's limits
        (default: its defaults on accelerators); a no-op when not compiling."""
        if self._compiled is None:
            return None
        sample = self.tokenizer.encode([WARM_TEXT])[0]
        return self._compiled.warm(
            self.tokenizer, sample, self._device, max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size
        )

    def close(self) -> None:
        release_modules(self)

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

    def run_tokens(self, batch: Sequence[Tokens]) -> list[np.ndarray]:
        """Each item's last hidden state (the transformer's token embeddings), special tokens included."""
        with self._threads.batch(), self._torch.inference_mode():
            hidden = to_host(self._token_embeddings(self.tokenizer.pad(batch))["token_embeddings"])
        return [np.ascontiguousarray(hidden[row, : len(item)], dtype=np.float32) for row, item in enumerate(batch)]

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
        return lexical_weights(weights, batch, self._unused_ids)

    def run_multivector(self, batch: Sequence[Tokens]) -> list[np.ndarray]:
        """bge-m3's multi-vector (ColBERT) rows, as FlagEmbedding's BGEM3FlagModel gives them:
        colbert_linear over the last hidden state without the first token, each row L2-normalized, the
        item's own tokens only (its padding left out)."""
        torch = self._torch
        with self._threads.batch(), torch.inference_mode():
            hidden = self._token_embeddings(self.tokenizer.pad(batch))["token_embeddings"]
            rows = to_host(self._colbert_head(hidden[:, 1:]))
        return colbert_rows(rows, batch)

    def run_chunks(self, batch: Sequence[Tokens]) -> list[np.ndarray]:
        """Late chunking: per item, the mean of each span's token vectors, then the modules after pooling
        (Dense layers); not normalized."""
        torch = self._torch
        with self._threads.batch(), torch.inference_mode():
            hidden = self._token_embeddings(self.tokenizer.pad(batch))["token_embeddings"]
            out = []
            for row, item in enumerate(batch):
                means = torch.stack([hidden[row, start:stop].mean(dim=0) for start, stop in item.spans])
                features = {"sentence_embedding": means}
                for module in self._modules[2:]:
                    features = module(features)
                out.append(to_host(features["sentence_embedding"]).astype(np.float32, copy=False))
        return out


def _pools_after(modules: Sequence[Any]) -> bool:
    """Whether the pipeline is transformer, Pooling, then layers over the pooled vector only (Dense): what late
    chunking's per-span pooling can stand in for."""
    names = [type(module).__name__ for module in modules]
    return len(names) >= 2 and names[1] == "Pooling" and all(name == "Dense" for name in names[2:])


def _folder_head(source: str, name: str, first_module: Any, dtype: str, device: Any) -> Any:
    """One of bge-m3's extra heads, a Linear(hidden, n) state dict at the folder's root (`sparse_linear.pt`,
    `colbert_linear.pt`), when the folder has it, whatever the family: it reads only the last hidden
    state, which every runner gives."""
    import torch

    path = Path(source) / name
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    hidden = first_module.auto_model.config.hidden_size
    head = torch.nn.Linear(hidden, int(state["weight"].shape[0]))
    head.load_state_dict(state)
    return head.to(device=device, dtype=getattr(torch, dtype)).eval()
