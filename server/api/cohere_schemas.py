"""Cohere's request and response bodies: v2's (/v2/embed, /v2/rerank), as `cohere.ClientV2` sends and reads
them, and v1's /v1/embed, as `cohere.Client` does."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from embedserve.models.output_types import OutputType
from embedserve.server.api.fields import NonEmptyText, PositiveInt

InputType = Literal["search_document", "search_query", "classification", "clustering", "image"]
EMBEDDING_TYPES = "float, base64 (float32 bytes), int8/uint8 (calibrated per model), binary/ubinary (packed sign bits)."


class TextContent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: NonEmptyText


class EmbedInput(BaseModel):
    """One of `inputs`: a list of content parts (text only here)."""

    model_config = ConfigDict(extra="ignore")

    content: Annotated[list[TextContent], Field(min_length=1)]

    def text(self) -> str:
        return " ".join(part.text for part in self.content)


class CohereEmbedOptions(BaseModel):
    """What Cohere's v1 and v2 embed bodies share."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="A served embedding model id or alias; optional when one is served.")
    input_type: InputType | None = Field(
        None,
        description="search_query and search_document pick the model's `query` and `document` (or `passage`) "
        "prompts; classification and clustering the prompts of those names; none where the model has none.",
    )
    truncate: Literal["NONE", "END", "START"] = Field(
        "END",
        description="END cuts over-long texts at the model's limit; NONE makes them a 400; START is not supported. "
        "null is END (langchain_cohere sends it).",
    )

    @field_validator("truncate", mode="before")
    @classmethod
    def _null_is_the_default(cls, value: object) -> object:
        return "END" if value is None else value


class V2EmbedRequest(CohereEmbedOptions):
    texts: Annotated[list[NonEmptyText], Field(min_length=1)] | None = None
    inputs: Annotated[list[EmbedInput], Field(min_length=1)] | None = None
    embedding_types: Annotated[list[OutputType], Field(min_length=1)] = Field(
        default_factory=lambda: ["float"],
        description=EMBEDDING_TYPES,
    )
    output_dimension: PositiveInt | None = Field(None, description="Truncate to this size, then renormalize.")
    max_tokens: PositiveInt | None = Field(None, description="Not supported: texts are cut at the model's own limit.")

    def all_texts(self) -> list[str]:
        """The texts to embed, from `texts` or `inputs` (exactly one of them; ValueError otherwise)."""
        if (self.texts is None) == (self.inputs is None):
            raise ValueError("send exactly one of `texts` or `inputs`")
        return list(self.texts) if self.texts is not None else [item.text() for item in self.inputs or []]


class V1EmbedRequest(CohereEmbedOptions):
    """Cohere's v1 body, as `cohere.Client.embed` posts it."""

    texts: Annotated[list[NonEmptyText], Field(min_length=1)]
    images: list[str] | None = Field(None, description="Not supported: this server embeds text.")
    embedding_types: Annotated[list[OutputType], Field(min_length=1)] | None = Field(
        None,
        description=f"{EMBEDDING_TYPES} With it, embeddings keyed by type (`embeddings_by_type`); without it, "
        "a list of float vectors (`embeddings_floats`).",
    )


class V2RerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="A served reranker id or alias; optional when one is served.")
    query: NonEmptyText
    documents: Annotated[list[NonEmptyText], Field(min_length=1)]
    top_n: PositiveInt | None = Field(None, description="Return only the best this many; default: all.")
    max_tokens_per_doc: PositiveInt | None = Field(
        None, description="Accepted for compatibility: pairs are cut at the model's own limit."
    )
    instruction: NonEmptyText | None = Field(
        None, description="Extension, for an LLM reranker (Qwen3-Reranker): the task it judges relevance by."
    )


class BilledUnits(BaseModel):
    input_tokens: int | None = None
    search_units: int | None = None


class ApiVersion(BaseModel):
    version: str


class Meta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits


class EmbeddingsByType(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    float_: list[list[float]] | None = Field(None, alias="float")
    base64: list[str] | None = None
    int8: list[list[int]] | None = None
    uint8: list[list[int]] | None = None
    binary: list[list[int]] | None = None
    ubinary: list[list[int]] | None = None


class V2EmbedResponse(BaseModel):
    id: str | None
    response_type: Literal["embeddings_by_type"] = "embeddings_by_type"
    embeddings: EmbeddingsByType
    texts: list[str]
    meta: Meta


class V1EmbedFloatsResponse(BaseModel):
    id: str | None
    response_type: Literal["embeddings_floats"] = "embeddings_floats"
    embeddings: list[list[float]]
    texts: list[str]
    meta: Meta


class V1EmbedByTypeResponse(V2EmbedResponse):
    """/v1/embed's answer when `embedding_types` is given: the body /v2/embed answers."""


V1EmbedResponse = Annotated[V1EmbedFloatsResponse | V1EmbedByTypeResponse, Field(discriminator="response_type")]


class V2RerankResult(BaseModel):
    index: int
    relevance_score: float


class V2RerankResponse(BaseModel):
    id: str | None
    results: list[V2RerankResult]
    meta: Meta


class CohereError(BaseModel):
    id: str | None = None
    message: str
