"""PyTorch runner for LLM rerankers (models.yes_no): a causal LM scores each pair by its next-token logits of "yes"
and "no" at the last position.

Only those two rows of the output embedding are multiplied, not the whole vocabulary (Qwen3's is 151k wide), and
only at the last position: the same numbers as `model(**inputs).logits[:, -1, [no, yes]]`, the model cards'
computation, for a fraction of its head's work.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedserve.models.backend import NO_OUTPUTS, CpuDefaults, WarmReport
from embedserve.models.errors import ModelLoadError
from embedserve.models.families import position_limit
from embedserve.models.spec import ModelSpec
from embedserve.models.threads import cpu_thread_share
from embedserve.models.torch_loading import CPU_BATCH_TOKENS, pick_device, pick_dtype, set_threads
from embedserve.models.transfer import to_device, to_host
from embedserve.models.types import ModelInfo, Tokens
from embedserve.models.yes_no import YesNoTokenizer, template_for


class TorchYesNoRerankRunner:
    cost = "padded"
    outputs = NO_OUTPUTS

    def __init__(self, spec: ModelSpec, source: str) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        set_threads(spec)
        device = pick_device(spec.device)
        try:
            config = AutoConfig.from_pretrained(source)
            dtype = pick_dtype(spec.dtype, device, config.model_type)
            template = template_for(spec.template, config.model_type)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype)).to(device).eval()
            hf_tokenizer = AutoTokenizer.from_pretrained(source)
        except Exception as exc:  # the libraries raise many types for a bad folder or an unreachable hub
            raise ModelLoadError(f"cannot load LLM reranker {spec.id!r} from {source!r}: {exc}") from exc
        if not hf_tokenizer.is_fast:
            raise ModelLoadError(f"LLM reranker {spec.id!r}: its tokenizer has no fast (tokenizers) version")
        head = model.get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            raise ModelLoadError(f"LLM reranker {spec.id!r}: an output layer with a bias is not supported")
        limits = [spec.max_length or template.max_length, position_limit(config)]
        max_length = min(x for x in limits if x)
        pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else hf_tokenizer.eos_token_id
        try:
            self.tokenizer = YesNoTokenizer(
                hf_tokenizer.backend_tokenizer, template, max_length=max_length, pad_id=pad_id or 0
            )
        except ValueError as exc:
            raise ModelLoadError(f"LLM reranker {spec.id!r}: {exc}") from exc

        self._device = torch.device(device)
        self._body = model.get_decoder()
        # The [no, yes] rows of the output layer, kept in float32 for the last step (a copy: two rows, not the vocab).
        self._answers = head.weight.detach()[list(self.tokenizer.answer_ids)].float().clone()
        self._softcap = getattr(config, "final_logit_softcapping", None)
        self._threads = cpu_thread_share(self._device)
        self.cpu = CpuDefaults(CPU_BATCH_TOKENS, self._threads.batches)
        self.info = ModelInfo(
            id=spec.id,
            kind=spec.kind,
            width=1,
            max_length=max_length,
            backend="torch",
            device=str(self._device),
            dtype=dtype,
            normalized=False,
            labels=("LABEL_0",),
        )

    def close(self) -> None:
        self._body = None
        self._answers = None
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()

    def warm(self, *, max_batch_tokens: int, max_batch_size: int) -> WarmReport | None:
        return None

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        """Per pair, `logit(yes) - logit(no)` at the last position, float32 (len(batch),)."""
        if not batch:
            return np.zeros(0, dtype=np.float32)
        torch = self._torch
        features = to_device(self.tokenizer.pad(batch), self._device)
        with self._threads.batch(), torch.inference_mode():
            hidden = self._body(**features).last_hidden_state[:, -1].float()
            logits = hidden @ self._answers.T
            if self._softcap:
                logits = torch.tanh(logits / self._softcap) * self._softcap
            scores = to_host(logits[:, 1] - logits[:, 0])
        return np.ascontiguousarray(scores, dtype=np.float32)
