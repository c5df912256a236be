"""OpenAI-compatible request and response bodies (/v1)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from embedserve.models.output_types import OutputType
from embedserve.server.api.fields import JsonBool, NonEmptyText, NonNegativeInt, PositiveInt

TokenIds = Annotated[list[NonNegativeInt], Field(min_length=1)]

EmbeddingInput = (
    NonEmptyText
    | Annotated[list[NonEmptyText], Field(min_length=1)]
    | TokenIds
    | Annotated[list[TokenIds], Field(min_length=1)]
)


class EmbeddingsRequest(BaseModel):
    # Unknown fields are ignored, as clients such as LangChain send extras.
    model_config = ConfigDict(extra="ignore")

    input: EmbeddingInput = Field(
        description="A string, an array of strings, an array of token ids, or an array of token-id arrays."
    )
    model: str | None = Field(None, description="A served model id or alias; optional when one model is served.")
    encoding_format: Literal["float", "base64"] = "float"
    embedding_type: OutputType | None = Field(
        None,
        description="Extension: the vectors as float, base64, int8, uint8, binary or ubinary (README, "
        "'Compact embeddings'); with it, encoding_format stays float.",
    )
    dimensions: PositiveInt | None = Field(None, description="Truncate to this size, then renormalize.")
    user: str | None = None
    truncate: JsonBool = Field(True, description="Truncate over-long inputs to the model's limit; false: 400 instead.")
    prompt_name: str | None = Field(
        None, description="A prompt of the model's (e.g. `query`, `document`); default: the model's default prompt."
    )
    late_chunking: JsonBool = Field(
        False,
        description="Jina's late chunking: the input texts are consecutive chunks of one document, encoded together "
        "(within the model's token limit, else 400); each chunk's vector is pooled over its own tokens.",
    )

    def inputs(self) -> list[str] | list[list[int]]:
        """The input as a list of items (strings, or token-id lists)."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if value and isinstance(value[0], int):
            return [value]  # type: ignore[list-item]
        return value  # type: ignore[return-value]


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "embedserve"
    kind: str
    aliases: list[str]
    status: str
    dimension: int | None
    max_length: int | None
    backend: str
    device: str | None
    dtype: str | None
    sparse: bool = False
    prompts: list[str]
    default_prompt: str | None
    error: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail
