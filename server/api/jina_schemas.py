"""Jina's multi-vector request and response bodies (POST /v1/multi-vector)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from embedserve.server.api.fields import JsonBool, NonEmptyText, PositiveInt


class MultiVectorRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="A served model id or alias; optional when one model is served.")
    input: NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1)] = Field(
        description="A string or an array of strings."
    )
    input_type: Literal["query", "document"] = Field(
        "document", description="The model's query or document prompt, where it has one."
    )
    embedding_type: Literal["float", "base64"] = Field(
        "float", description="Each row as floats, or as base64 of its little-endian float32 bytes."
    )
    dimensions: PositiveInt | None = Field(None, description="Only the model's own multi-vector width is accepted.")
    truncate: JsonBool = Field(True, description="Truncate over-long inputs to the model's limit; false: 400 instead.")

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class MultiVectorData(BaseModel):
    object: Literal["embeddings"] = "embeddings"
    index: int
    embeddings: list[list[float]] | list[str] = Field(description="One row per token, the first token's left out.")


class MultiVectorUsage(BaseModel):
    total_tokens: int


class MultiVectorResponse(BaseModel):
    model: str
    object: Literal["list"] = "list"
    usage: MultiVectorUsage
    data: list[MultiVectorData]
