"""torch.compile for a runner's module chain, every graph it needs compiled at start-up.

Why: in eager mode EmbeddingGemma spends most of its GPU time in small elementwise kernels (its
float32 RMSNorms); a compiler fuses them (inductor: 4.1x on an H100), and BERT-style models gain
from fused bias/activation/norm kernels too.

How:
- The whole chain (transformer, pooling, dense layers) is one nn.Module taking tensors, so the
  compiler sees one graph; pooling reads the attention mask, so padding changes no result.
- Batches are padded to a length bucket (models.shapes) and the row count is a symbolic size, so
  the set of graphs is one per bucket. `warm()` compiles them all before the model is served; a
  batch whose bucket is not warm (warm() not run, or it failed) runs the uncompiled modules, so
  no request ever waits for a compile.

Settings (environment): EMBEDSERVE_COMPILE_BACKEND, the torch.compile backend (default
"inductor"; "aot_eager" or "eager" check the mechanism in seconds on a CPU); EMBEDSERVE_COMPILE_MODE,
inductor's mode (default: its own; "max-autotune-no-cudagraphs" tunes every GEMM of every bucket,
a much longer start-up); EMBEDSERVE_COMPILE_LENGTHS, "static" (default: one graph per bucket,
sizes known to the compiler) or "dynamic" (the length symbolic too: one graph for every bucket,
which the tiny BERT, XLM-R and Gemma3 models trace without a recompile, so start-up pays one
compile instead of one per bucket, 16 to 32; warm() still runs every bucket). Inductor caches
compiled graphs on disk (TORCHINDUCTOR_CACHE_DIR, default under /tmp), so a restart with the same
model, torch and GPU compiles much faster.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from embedserve.models.backend import WarmReport
from embedserve.models.shapes import bucket, length_buckets, padded_rows, warm_shapes
from embedserve.models.transfer import to_device
from embedserve.models.types import Tokens

log = logging.getLogger("embedserve.models")

BACKEND_ENV = "EMBEDSERVE_COMPILE_BACKEND"
MODE_ENV = "EMBEDSERVE_COMPILE_MODE"
LENGTHS_ENV = "EMBEDSERVE_COMPILE_LENGTHS"


class _Chain(torch.nn.Module):
    """The runner's modules as one module, tensors in and the output tensor out, for one graph."""

    def __init__(self, stages: Sequence[torch.nn.Module], output: str) -> None:
        super().__init__()
        self.stages = torch.nn.ModuleList(stages)
        self.output = output

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        features: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            features["token_type_ids"] = token_type_ids
        for stage in self.stages:
            features = stage(features)
        return features[self.output]


def _recompile_budget(graphs: int) -> None:
    """Room for this chain's graphs under dynamo's process-wide cap (each chain also has its own limit)."""
    torch._dynamo.config.accumulated_recompile_limit += graphs


class CompiledForward:
    """The compiled chain of one runner, with the padding that keeps it on warmed shapes."""

    def __init__(
        self,
        modules: Sequence[torch.nn.Module],
        output: str,
        *,
        max_length: int,
        required: bool = False,
        backend: str | Callable[..., Any] | None = None,
        mode: str | None = None,
        lengths: str | None = None,
    ) -> None:
        self.buckets = length_buckets(max_length)
        self.backend = backend or os.environ.get(BACKEND_ENV) or "inductor"
        self.mode = mode or os.environ.get(MODE_ENV) or None
        self.lengths = lengths or os.environ.get(LENGTHS_ENV) or "static"
        if self.lengths not in ("static", "dynamic"):
            raise ValueError(f"{LENGTHS_ENV} must be 'static' or 'dynamic', not {self.lengths!r}")
        self._dynamic_dims = (0, 1) if self.lengths == "dynamic" else (0,)
        self.required = required
        """Whether a failed warm-up fails the load (compile "on") or leaves the model uncompiled ("auto")."""
        self.warmed: set[int] = set()
        self.eager_batches = 0
        """Batches that ran uncompiled because their bucket was not warm."""
        self.warm_seconds = 0.0
        self._chain = _Chain(modules, output)
        options = {"mode": self.mode} if self.mode and self.backend == "inductor" else {}
        _recompile_budget(len(self.buckets))
        self._compiled: Callable[..., torch.Tensor] = torch.compile(
            self._chain,
            backend=self.backend,
            dynamic=False,  # nothing symbolic but what __call__ marks: the rows (and the length if asked)
            recompile_limit=len(self.buckets) + 1,
            isolate_recompiles=True,
            **options,
        )

    def pad(self, tokenizer: Any, batch: Sequence[Tokens]) -> dict[str, np.ndarray] | None:
        """The batch padded to its length bucket and at least MIN_ROWS rows (copies of its first
        item, dropped from the output); None when that bucket is not warm: run it uncompiled."""
        width = bucket(max(len(t) for t in batch), self.buckets)
        if width not in self.warmed:
            self.eager_batches += 1
            return None
        rows = [*batch, *[batch[0]] * (padded_rows(len(batch)) - len(batch))]
        return tokenizer.pad(rows, width=width)

    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The chain's output for padded features already on the device (under inference_mode)."""
        for tensor in features.values():
            torch._dynamo.mark_dynamic(tensor, self._dynamic_dims)
        return self._compiled(**features)

    def warm(
        self,
        tokenizer: Any,
        sample: Tokens,
        device: torch.device,
        *,
        max_batch_tokens: int,
        max_batch_size: int,
    ) -> WarmReport:
        """Compiles every bucket (and runs its largest batch), so serving never compiles.

        `sample` (a real tokenized text) is repeated to each bucket's length; the values do not
        matter to the graph, only the shapes do. A failure raises when the compile was asked for
        ("on"); otherwise it is logged and the model serves uncompiled. The limits are the batcher's
        for this model: they bound the shapes it will be given."""
        started = time.perf_counter()
        try:
            for rows, length in warm_shapes(self.buckets, max_batch_tokens, max_batch_size):
                arrays = tokenizer.pad([_stretched(sample, length)] * rows, width=length)
                with torch.inference_mode():
                    self(to_device(arrays, device))
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                self.warmed.add(length)
        except Exception as exc:
            self.warmed.clear()
            if self.required:
                raise
            log.warning(
                "torch.compile failed; serving uncompiled",
                extra={"backend": self.backend, "error": f"{type(exc).__name__}: {exc}"},
            )
        self.warm_seconds = time.perf_counter() - started
        return WarmReport(
            f"{self.backend} ({self.lengths} lengths)", tuple(self.buckets), len(self.warmed), self.warm_seconds
        )


def _stretched(sample: Tokens, length: int) -> Tokens:
    """`sample`'s tokens repeated and cut to exactly `length`."""
    times = math.ceil(length / len(sample))
    types = (sample.type_ids * times)[:length] if sample.type_ids is not None else None
    return Tokens((sample.ids * times)[:length], types)
