"""The one interface between the server's batcher and whatever runs a model, and the registry of
backends that implement it.

A runner turns inputs into `Tokens` (cheap, any thread) and runs a list of `Tokens` as one batch
(the batcher's worker thread). The batcher only ever sees `Tokens` and their lengths; what a runner
can do beyond embedding or scoring is declared in its `ModelInfo` (e.g. `sparse`), never probed.

Adding a backend (OpenVINO, TensorRT, ...): write one module with a runner class per kind it serves,
implementing `EmbeddingRunner` and/or `RerankRunner` below, then `register()` a `BackendEntry` for it
(here, for the built-in ones, or from your own code before the server starts). Specs name it as
`backend:`; preflight, loading and the batcher's budgets read the entry and the runner. models/README.md
walks through it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from models.types import ModelInfo, SparseVector, Tokens, TokenSpan


class Runner(Protocol):
    info: ModelInfo
    pads: bool
    """Whether `run` computes on padding (its cost is longest item x items) or on real tokens only
    (packed: the sum of the items' lengths). The batcher budgets a batch by the cost that applies."""
    cpu_batch_tokens: int
    """The batch-token budget this runner wants on a CPU where the operator set none."""
    cpu_workers: int
    """Batches this runner wants run at once on a CPU where the operator set none."""

    def run(self, batch: Sequence[Tokens]) -> np.ndarray: ...

    def warm(self, *, max_batch_tokens: int, max_batch_size: int) -> Any:
        """Prepares every shape it will be given (compiling, where it compiles) before it is served;
        what it prepared, for the start-up log, or None."""
        ...

    def close(self) -> None:
        """Frees what the runner holds (sessions, device memory); it is not run again."""
        ...

    def describe(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[list[TokenSpan]]:
        """Each text's tokens and the characters they cover (TEI's /tokenize)."""
        ...

    def decode(self, sequences: Sequence[Sequence[int]], *, skip_special_tokens: bool = True) -> list[str]:
        """Texts back from token ids (TEI's /decode)."""
        ...


class EmbeddingRunner(Runner, Protocol):
    def tokenize(self, texts: Sequence[str], *, prompt: str = "", truncate: bool = True) -> list[Tokens]:
        """Tokenizes `prompt + text` for each text."""
        ...

    def tokenize_ids(self, ids: Sequence[Sequence[int]], *, truncate: bool = True) -> list[Tokens]:
        """Token-id inputs as the content: the model's special tokens are added around them."""
        ...

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        """Embeds one batch: float32 array of shape (len(batch), dimension), not normalized."""
        ...


class SparseRunner(EmbeddingRunner, Protocol):
    """An embedding runner whose `info.sparse` is true also gives lexical weights."""

    def run_sparse(self, batch: Sequence[Tokens]) -> list[SparseVector]: ...


class TokenEmbeddingRunner(EmbeddingRunner, Protocol):
    """An embedding runner whose `info.token_embeddings` is true also gives each token's vector."""

    def run_tokens(self, batch: Sequence[Tokens]) -> list[np.ndarray]:
        """Per item, its last hidden state: float32 (len(item), hidden), special tokens included."""
        ...


class RerankRunner(Runner, Protocol):
    """Cross-encoders; a sequence classifier (kind "classify") is the same runner, given single texts."""

    def tokenize(self, texts: Sequence[str], *, prompt: str = "", truncate: bool = True) -> list[Tokens]:
        """Single texts, for classification."""
        ...

    def tokenize_pairs(self, query: str, documents: Sequence[str], *, truncate: bool = True) -> list[Tokens]:
        """One item per (query, document) pair, as the model's own tokenizer encodes a pair."""
        ...

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        """Raw logits, float32: shape (len(batch),) for one label, (len(batch), labels) otherwise."""
        ...


@dataclass(frozen=True, slots=True)
class BackendEntry:
    """A backend by name: the packages it runs on (checked before loading, imported when loading),
    the extra that installs them, and its runner class for each kind it serves ("module:Class",
    imported only when a model of that backend loads, so an ONNX server never imports torch)."""

    name: str
    packages: tuple[str, ...]
    extra: str
    runners: Mapping[str, str] = field(default_factory=dict)
    hint: str = ""
    """Added to the "not installed" message (e.g. where a lighter backend would do)."""

    def runner_class(self, kind: str) -> type:
        target = self.runners.get(kind)
        if target is None:
            raise ValueError(f"backend {self.name!r} serves {', '.join(self.runners)} models, not {kind}")
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)


BACKENDS: dict[str, BackendEntry] = {}


def register(entry: BackendEntry) -> BackendEntry:
    BACKENDS[entry.name] = entry
    return entry


def backend_entry(name: str) -> BackendEntry:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None


def build_runner(backend: str, kind: str, spec: Any, source: str) -> Any:
    """The runner of `kind` for `spec` on `backend`, loaded from `source`."""
    return backend_entry(backend).runner_class(kind)(spec, source)


_ONNX_RUNNERS = {"embed": "models.onnx_runner:OnnxEmbeddingRunner", "rerank": "models.onnx_runner:OnnxRerankRunner"}
register(
    BackendEntry(
        "torch",
        ("torch", "transformers", "sentence_transformers"),
        "torch",
        {
            "embed": "models.torch_embedding:TorchEmbeddingRunner",
            "rerank": "models.torch_rerank:TorchRerankRunner",
            "classify": "models.torch_rerank:TorchRerankRunner",
        },
        hint=" (or serve an ONNX folder made by `embedserve quantize`)",
    )
)
register(BackendEntry("onnx", ("onnxruntime",), "onnx", _ONNX_RUNNERS))
register(BackendEntry("onnx-int8", ("onnxruntime",), "onnx", _ONNX_RUNNERS))
