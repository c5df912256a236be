"""Reranking request and response bodies: Cohere/Jina's shape (/v1/rerank) and TEI's (/rerank)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from embedserve.server.api.fields import JsonBool, NonEmptyText, NonNegativeNumber, PositiveInt


class DocumentObject(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: NonEmptyText


class RerankOptions(BaseModel):
    model: str | None = Field(None, description="A served reranker id or alias; optional when one reranker is served.")
    query: NonEmptyText
    truncate: JsonBool = Field(True, description="Truncate over-long (query, document) pairs; false: 413 instead.")
    raw_scores: JsonBool = Field(False, description="Raw logits instead of sigmoid-normalized scores in [0, 1].")
    prompt_name: str | None = Field(
        None,
        validation_alias=AliasChoices("prompt_name", "task"),
        description="A prompt of the model's, put before the query; default: the model's default prompt.",
    )
    instruction: NonEmptyText | None = Field(
        None,
        description="Extension, for an LLM reranker (Qwen3-Reranker): the task it judges relevance by; default: "
        "its template's, `Given a web search query, retrieve relevant passages that answer the query`.",
    )
    mode: Literal["colbert", "hybrid"] | None = Field(
        None,
        description="Extension, for an embedding model with bge-m3's heads named as the reranker: `colbert` (the "
        "default) scores by MaxSim over multi-vectors, `hybrid` by FlagEmbedding's weighted sum of dense, sparse "
        "and multi-vector scores.",
    )
    weights: Annotated[list[NonNegativeNumber], Field(min_length=3, max_length=3)] | None = Field(
        None,
        description="With `mode: hybrid`: the weights of dense, sparse and multi-vector scores; default 0.4, 0.2, 0.4.",
    )


class RerankRequest(RerankOptions):
    """Cohere / Jina: documents as strings or `{"text": ...}` objects."""

    model_config = ConfigDict(extra="ignore")  # clients send extras such as `max_chunks_per_doc`

    documents: Annotated[list[NonEmptyText | DocumentObject], Field(min_length=1)]
    top_n: PositiveInt | None = Field(None, description="Return only the best this many; default: all.")
    return_documents: JsonBool = Field(False, description="Include each document's text in its result.")

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    id: str | None = None
    object: str = "rerank"
    model: str
    results: list[RerankResult]
    usage: RerankUsage


class TeiRerankRequest(RerankOptions):
    """TEI's /rerank."""

    model_config = ConfigDict(extra="forbid")

    texts: Annotated[list[NonEmptyText], Field(min_length=1)]
    return_text: JsonBool = False


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None
