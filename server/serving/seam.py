"""The one seam between the routes and whatever serves a model: a model here (torch, ONNX or any
registered runner, behind its batcher) or an upstream server. Routes name a model, get a
`ServedModel`, and call it; they never ask where it runs.

Each API shape is a thin translation onto these calls (`server/api/*`); what applies to every
model (deadlines, admission by tokens, output types, tracing) is applied once, around them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from embedserve.batching.batcher import Priority
from embedserve.models.classifier import Function, TextOrPair
from embedserve.models.late_interaction import DEFAULT_WEIGHTS
from embedserve.models.types import (
    Embeddings,
    MultiVectors,
    Predictions,
    Scores,
    SparseEmbeddings,
    TokenEmbeddings,
    TokenSpan,
)

Inputs = Sequence[str] | Sequence[Sequence[int]]
"""Texts, or token-id sequences (their content: the model's special tokens are added around them)."""

Admission = Callable[[int], Awaitable[None]]
"""Called with a request's input token count before its work is queued or sent; raises to refuse it."""


@dataclass(frozen=True, slots=True)
class EmbedParams:
    dimensions: int | None = None
    normalize: bool | None = None
    """None: the model's own choice (its folder's pipeline; upstreams: as they answer)."""
    truncate: bool = True
    prompt_name: str | None = None
    max_tokens: int | None = None
    """At most this many input tokens in the whole request (a bound on an answer of per-token rows); past it,
    InputTooLong (413). None: no bound beyond the queue's."""


@dataclass(frozen=True, slots=True)
class RerankParams:
    truncate: bool = True
    raw_scores: bool = False
    prompt_name: str | None = None
    instruction: str | None = None
    """The task an LLM reranker is told (models.yes_no); None: its template's default. Other models take none."""
    mode: Literal["colbert", "hybrid"] | None = None
    """For an embedding model with bge-m3's heads: MaxSim over multi-vectors ("colbert", the default), or
    FlagEmbedding's weighted sum of dense, sparse and multi-vector scores ("hybrid"). None for a reranker."""
    weights: tuple[float, float, float] = DEFAULT_WEIGHTS
    """The hybrid's weights of dense, sparse and multi-vector scores (FlagEmbedding's defaults)."""


@dataclass(frozen=True, slots=True)
class ClassifyParams:
    truncate: bool = True
    function: Function | None = None
    """What turns logits into scores (models.classifier); None: softmax, or a one-label model's sigmoid."""
    prompt_name: str | None = None


@dataclass(slots=True)
class Call:
    """What a request brings to any model: its deadline (seconds from now) and its token admission;
    and what the server records of it: who called, and which model served. One per request
    (server.http.calls), passed down to the model; models read it, never change it."""

    within: float | None = None
    """None: no deadline (the server's own work, e.g. calibration)."""
    priority: Priority = "interactive"
    """Its class in the batchers (batching.batcher): bulk work runs on the capacity interactive work leaves."""
    admit: Admission | None = None
    caller: str | None = None
    """Who made the request (server.http.auth's identity), for the access log."""
    model: str = ""
    """The id of the model that serves it: labels the request's metrics, trace and access log."""
    releases: list[Callable[[], None]] = field(default_factory=list)
    """What the request holds until it ends (the model it runs on, which is not unloaded under it:
    server.serving.model_host), let go by server.http.calls.end."""


class ServedModel(Protocol):
    spec: Any
    """The model's settings; `spec.id` is its name, `spec.kind` what it does ("embed", "rerank" or "classify")."""

    @property
    def prompts(self) -> dict[str, str]:
        """Named prompts the model applies itself (empty upstream: the upstream applies its own)."""
        ...

    @property
    def outputs(self) -> list[str]:
        """What it gives besides its main output (models.backend: SPARSE, TOKENS, MULTIVECTOR, CHUNKS); none upstream."""
        ...

    @property
    def dimension(self) -> int | None:
        """Its vectors' size, where known before a request (None upstream)."""
        ...

    async def embed(self, inputs: Inputs, options: EmbedParams, call: Call) -> Embeddings: ...

    async def embed_sparse(self, texts: Sequence[str], options: EmbedParams, call: Call) -> SparseEmbeddings:
        """Lexical weights; InvalidInput where the model has no sparse head."""
        ...

    async def rerank(self, query: str, documents: Sequence[str], options: RerankParams, call: Call) -> Scores: ...

    async def embed_tokens(self, texts: Sequence[str], options: EmbedParams, call: Call) -> TokenEmbeddings:
        """Each token's vector (TEI's /embed_all); InvalidInput where the model cannot give them."""
        ...

    async def embed_multivector(self, texts: Sequence[str], options: EmbedParams, call: Call) -> MultiVectors:
        """Multi-vector (ColBERT) rows (Jina's /v1/multi-vector); InvalidInput where the model has no such head."""
        ...

    async def embed_late_chunks(self, chunks: Sequence[str], options: EmbedParams, call: Call) -> Embeddings:
        """Late chunking: `chunks` are consecutive pieces of one document, encoded together as one text; a vector
        per chunk, pooled over its own tokens. InvalidInput past the model's limit, or where it cannot."""
        ...

    async def classify(self, inputs: Sequence[TextOrPair], options: ClassifyParams, call: Call) -> Predictions: ...

    async def describe(
        self, texts: Sequence[str], *, add_special_tokens: bool, prompt_name: str | None
    ) -> list[list[TokenSpan]]:
        """Each text's tokens and the characters they cover; InvalidInput where the tokenizer is not here."""
        ...

    async def decode(self, sequences: Sequence[Sequence[int]], *, skip_special_tokens: bool) -> list[str]: ...

    async def calibration(self, dimensions: int | None) -> np.ndarray:
        """Per-dimension [min, max] of its embeddings of the built-in calibration sentences (what int8
        and uint8 outputs are scaled by); InvalidInput where it cannot be computed here."""
        ...
