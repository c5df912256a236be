"""PyTorch runner for cross-encoder rerankers (bge-reranker, ms-marco cross-encoders, ...).

The folder is loaded with sentence-transformers' `CrossEncoder`, so the model, its token limit and
any modules after the transformer are exactly what `CrossEncoder.predict` uses; we skip `predict()`
and run the modules on batches the batcher formed, returning raw logits. `models.reranker` turns
those into the scores a client sees.

Only sequence-classification cross-encoders whose pairs are plain text pairs run here; causal-LM rerankers
(Qwen3-Reranker, scored from yes/no logits under their template) have their own runner, models.torch_yes_no, and
`rerank_runner` picks between the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from embedserve.models.backend import NO_OUTPUTS, CpuDefaults, WarmReport
from embedserve.models.errors import ModelLoadError
from embedserve.models.packed_encoder import PackedClassifier, classifier_unsupported
from embedserve.models.prompts import merged_prompts
from embedserve.models.reranker import scores_per_pair
from embedserve.models.spec import ModelSpec
from embedserve.models.threads import cpu_thread_share
from embedserve.models.tokenizer import PairTokenizer
from embedserve.models.torch_loading import (
    CPU_BATCH_TOKENS,
    PACKED_BATCHES_COST,
    WARM_TEXT,
    compiled_forward,
    first_module_limit,
    load_st_model,
    packed_runner,
    release_modules,
)
from embedserve.models.torch_yes_no import TorchYesNoRerankRunner
from embedserve.models.transfer import to_device, to_host
from embedserve.models.types import ModelInfo, Tokens
from embedserve.models.yes_no import is_causal_lm


class TorchRerankRunner:
    cost = PACKED_BATCHES_COST
    outputs = NO_OUTPUTS

    def __init__(self, spec: ModelSpec, source: str) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        self._torch = torch
        model, device, dtype = load_st_model(spec, source, CrossEncoder)

        modules = list(model)
        first = modules[0] if modules else None
        if (
            first is None
            or getattr(first, "transformer_task", None) != "sequence-classification"
            or set(getattr(first, "modality_config", {})) != {"text"}
            or model.tokenizer is None
            or not model.tokenizer.is_fast
        ):
            raise ModelLoadError(
                f"reranker {spec.id!r} from {source!r} is not a text sequence-classification cross-encoder "
                "with a fast tokenizer (causal-LM rerankers and chat-template pair formats are not supported)"
            )
        self._modules = modules
        self._device = torch.device(device)
        self._threads = cpu_thread_share(self._device)
        self.cpu = CpuDefaults(CPU_BATCH_TOKENS, self._threads.batches)

        hf_tokenizer = model.tokenizer
        # CrossEncoder's own limit is the tokenizer's model_max_length capped at max_position_embeddings.
        max_length = min(x for x in (spec.max_length, model.max_seq_length, first_module_limit(first)) if x)
        model.max_seq_length = max_length
        try:
            self.tokenizer = PairTokenizer(
                hf_tokenizer.backend_tokenizer,
                max_length=max_length,
                pad_id=hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0,
                with_type_ids="token_type_ids" in hf_tokenizer.model_input_names,
                truncation_side=hf_tokenizer.truncation_side,
            )
        except ValueError as exc:
            raise ModelLoadError(f"reranker {spec.id!r}: {exc}") from exc

        self._compiled = compiled_forward(spec, device, modules, "scores", max_length)
        self._packed = None
        if self._compiled is None and len(modules) == 1:  # no module after the classifier to feed
            self._packed = packed_runner(
                spec, first.auto_model, unsupported=classifier_unsupported, build=PackedClassifier
            )

        self.num_labels = int(model.num_labels)
        prompts = merged_prompts(model.prompts, spec.prompts)
        self.info = ModelInfo(
            id=spec.id,
            kind=spec.kind,
            width=self.num_labels,
            max_length=max_length,
            backend="torch",
            device=str(self._device),
            dtype=dtype,
            normalized=False,
            prompts=prompts,
            default_prompt=spec.default_prompt or model.default_prompt_name,
            labels=label_names(getattr(first.auto_model, "config", None), self.num_labels),
        )

    def close(self) -> None:
        release_modules(self)

    def warm(self, *, max_batch_tokens: int, max_batch_size: int) -> WarmReport | None:
        """Compiles every length bucket now, at start-up (see TorchEmbeddingRunner.warm)."""
        if self._compiled is None:
            return None
        sample = self.tokenizer.encode_pairs(WARM_TEXT, [WARM_TEXT])[0]
        return self._compiled.warm(
            self.tokenizer, sample, self._device, max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size
        )

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        """Raw logits, float32: shape (len(batch),) for one label, (len(batch), num_labels) otherwise."""
        if not batch:
            return np.zeros((0,) if self.num_labels == 1 else (0, self.num_labels), dtype=np.float32)
        torch = self._torch
        compiled = self._compiled
        arrays = compiled.pad(self.tokenizer, batch) if compiled is not None else None
        with self._threads.batch(), torch.inference_mode():
            if arrays is not None:
                scores = to_host(compiled(to_device(arrays, self._device))[: len(batch)])
            elif self._packed is not None:
                scores = to_host(self._packed(self._packed.pack(self.tokenizer.pad(batch)), self._device))
            else:
                features = to_device(self.tokenizer.pad(batch), self._device)
                for module in self._modules:
                    features = module(features)
                scores = to_host(features["scores"])
        return scores_per_pair(scores, self.num_labels, len(batch))


def rerank_runner(spec: ModelSpec, source: str) -> TorchRerankRunner | TorchYesNoRerankRunner:
    """The torch runner for a reranker folder: an LLM reranker's (models.yes_no) for a causal LM, else a
    cross-encoder's."""
    if is_causal_lm(source) or spec.template is not None:
        return TorchYesNoRerankRunner(spec, source)
    return TorchRerankRunner(spec, source)


def label_names(config: Any, count: int) -> tuple[str, ...]:
    """The folder's label names by output index (id2label), or LABEL_i where it names none."""
    names = getattr(config, "id2label", None) or {}
    return tuple(str(names.get(i, names.get(str(i), f"LABEL_{i}"))) for i in range(count))
