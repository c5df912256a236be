"""The one interface between the server and whatever runs a model, and the registry of backends
that implement it.

A runner runs a batch of already tokenized items (`Tokens`) and nothing else: the server tokenizes
every request with the runner's `tokenizer` (the model's own, as the runner loaded it), on its own
threads, before the batcher sees it, and TEI's /tokenize and /decode go through it too. The batcher
only ever sees `Tokens` and their lengths. What a runner computes besides its main output (sparse
lexical weights, each token's vector) it declares in `outputs`, never probed for.

Adding a backend (OpenVINO, TensorRT, ...): write one module with a runner class per kind it serves,
implementing `Runner` below, then `register()` a `BackendEntry` for it (here, for the built-in ones,
or from your own code before the server starts). Specs name it as `backend:`; preflight, loading and
the batcher's budgets read the entry and the runner. models/README.md walks through it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol

import numpy as np

from embedserve.models.types import ModelInfo, Tokens, TokenSpan

BatchCost = Literal["padded", "tokens"]
"""What one batch costs a runner, which the batcher budgets: "padded", the longest item x the items
(it computes on padding), or "tokens", the items' own lengths (it computes on real tokens only)."""

SPARSE = "sparse"
"""An output: per item, its lexical weights (a `SparseVector`; bge-m3's sparse head)."""
TOKENS = "tokens"
"""An output: per item, each token's vector, float32 (len(item), hidden), special tokens included."""
MULTIVECTOR = "multivector"
"""An output: per item, its multi-vector (ColBERT) rows, float32 (len(item) - 1, width), each L2-normalized:
bge-m3's colbert_linear over the last hidden state, the first token ([CLS]/<s>) and padding left out."""
CHUNKS = "chunks"
"""An output: per item, one vector per span of its `Tokens.spans` (late chunking), float32 (len(spans), width): the
mean of the span's token vectors, then the model's layers after pooling (its Dense layers), not normalized."""
NO_OUTPUTS: Mapping[str, Callable[[Sequence[Tokens]], Sequence[Any]]] = MappingProxyType({})
"""A runner's `outputs` where it has none besides `run`'s."""


@dataclass(frozen=True, slots=True)
class CpuDefaults:
    """What a runner wants on a CPU where the operator set nothing: the tokens of one batch, and how
    many batches run at once."""

    batch_tokens: int
    workers: int = 1


@dataclass(frozen=True, slots=True)
class WarmReport:
    """What a runner prepared before it was served, for the start-up log."""

    backend: str
    """What prepared it (a torch.compile backend)."""
    lengths: tuple[int, ...]
    """The sequence lengths it prepares for."""
    warmed: int
    """How many of them are ready."""
    seconds: float


class ModelTokenizer(Protocol):
    """The model's tokenizer as the server uses it (models.tokenizer has ones for any `tokenizers`
    tokenizer). Embedders need `encode` and `encode_ids`; rerankers `encode_pairs`; classifiers `encode`
    and `encode_pairs`."""

    max_length: int

    def encode(self, texts: Sequence[str], *, prompt: str = "", truncate: bool = True) -> list[Tokens]:
        """`prompt + text` for each text, special tokens added, cut at the model's limit unless `truncate`
        is off (then InvalidInput)."""
        ...

    def encode_ids(self, sequences: Sequence[Sequence[int]], *, truncate: bool = True) -> list[Tokens]:
        """Token-id inputs as the content: the model's special tokens are added around them."""
        ...

    def encode_pairs(
        self, query: str, documents: Sequence[str], *, truncate: bool = True, instruction: str | None = None
    ) -> list[Tokens]:
        """One item per (query, document) pair, as the model's own tokenizer encodes a pair; `instruction` is the
        task an LLM reranker is told (models.yes_no). A tokenizer of models told no task leaves the parameter
        out, and a request that names one is refused (models.reranker)."""
        ...

    def describe(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[list[TokenSpan]]:
        """Each text's tokens and the characters they cover (TEI's /tokenize)."""
        ...

    def decode(self, sequences: Sequence[Sequence[int]], *, skip_special_tokens: bool = True) -> list[str]:
        """Texts back from token ids (TEI's /decode); InvalidInput where they cannot be."""
        ...


class Runner(Protocol):
    """A loaded model. Its constructor takes `(spec, source)`: a `ModelSpec` and the resolved folder."""

    info: ModelInfo
    tokenizer: ModelTokenizer
    cost: BatchCost
    cpu: CpuDefaults
    outputs: Mapping[str, Callable[[Sequence[Tokens]], Sequence[Any]]]
    """Its outputs besides `run`'s, by name (SPARSE, TOKENS, MULTIVECTOR, CHUNKS): each runs a batch like `run`, one result per
    item. Empty where it has none."""

    def run(self, batch: Sequence[Tokens]) -> np.ndarray:
        """One batch. Embedders: float32 (len(batch), dimension), not normalized. Rerankers and classifiers:
        raw logits, float32 (len(batch),) for one label, (len(batch), labels) otherwise."""
        ...

    def warm(self, *, max_batch_tokens: int, max_batch_size: int) -> WarmReport | None:
        """Prepares every shape it will be given (compiling, where it compiles) before it is served,
        within the batcher's limits; what it prepared, or None where it prepares nothing."""
        ...

    def close(self) -> None:
        """Frees what the runner holds (sessions, device memory); it is not run again."""
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
    """"module:name" by kind: a runner class, or a function of (spec, source) that builds the right one."""
    hint: str = ""
    """Added to the "not installed" message (e.g. where a lighter backend would do)."""

    def runner_class(self, kind: str) -> Callable[[Any, str], Any]:
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


_ONNX_RUNNERS = {
    "embed": "embedserve.models.onnx_runner:OnnxEmbeddingRunner",
    "rerank": "embedserve.models.onnx_runner:OnnxRerankRunner",
}
register(
    BackendEntry(
        "torch",
        ("torch", "transformers", "sentence_transformers"),
        "torch",
        {
            "embed": "embedserve.models.torch_embedding:TorchEmbeddingRunner",
            "rerank": "embedserve.models.torch_rerank:rerank_runner",
            "classify": "embedserve.models.torch_rerank:TorchRerankRunner",
        },
        hint=" (or serve an ONNX folder made by `embedserve quantize`)",
    )
)
register(BackendEntry("onnx", ("onnxruntime",), "onnx", _ONNX_RUNNERS))
register(BackendEntry("onnx-int8", ("onnxruntime",), "onnx", _ONNX_RUNNERS))
