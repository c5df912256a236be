"""Native request and response bodies (/embed, /batch-embed)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Discriminator, Field, Tag

from embedserve.models.output_types import OutputType
from embedserve.server.api.fields import JsonBool, NonEmptyText, PositiveInt


class EmbedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="A served model id or alias; optional when one model is served.")
    normalize: JsonBool | None = Field(None, description="L2-normalize; default: as the model's own pipeline does.")
    dimensions: PositiveInt | None = Field(None, description="Truncate to this size (then normalize).")
    truncate: JsonBool = Field(True, description="Truncate over-long texts to the model's limit; false: 400 instead.")
    prompt_name: str | None = Field(
        None,
        validation_alias=AliasChoices("prompt_name", "task"),
        description="A prompt of the model's (also accepted as `task`); default: the model's default prompt.",
    )
    embedding_type: OutputType = Field(
        "float", description="float, base64, int8, uint8, binary or ubinary (README, 'Compact embeddings')."
    )


class EmbedRequest(EmbedOptions):
    text: NonEmptyText


class TeiEmbedRequest(BaseModel):
    """TEI's /embed body (`inputs`: one text or a list), answered in TEI's shape: a list of vectors."""

    model_config = ConfigDict(extra="forbid")

    inputs: NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1)]
    model: str | None = Field(None, description="A served model id or alias; optional when one model is served.")
    normalize: JsonBool = Field(True, description="L2-normalize (TEI's default).")
    truncate: JsonBool = Field(True, description="Truncate over-long texts to the model's limit; false: 400 instead.")
    truncation_direction: Literal["right", "Right"] = Field("right", description="Only right truncation is done.")
    dimensions: PositiveInt | None = Field(None, description="Truncate to this size (then normalize).")
    prompt_name: str | None = Field(None, description="A prompt of the model's; default: the model's default prompt.")
    embedding_type: OutputType = Field(
        "float", description="Extension: float, base64, int8, uint8, binary or ubinary (README, 'Compact embeddings')."
    )

    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else self.inputs


def _embed_body_shape(value: Any) -> str:
    return "tei" if isinstance(value, dict) and "inputs" in value else "native"


EmbedBody = Annotated[
    Annotated[EmbedRequest, Tag("native")] | Annotated[TeiEmbedRequest, Tag("tei")], Discriminator(_embed_body_shape)
]
"""POST /embed takes the native body (`text`) or TEI's (`inputs`), told apart by that key."""


class BatchEmbedRequest(EmbedOptions):
    texts: Annotated[list[NonEmptyText], Field(min_length=1)]


class EmbedSparseRequest(BaseModel):
    """TEI's /embed_sparse: `inputs` is one text or a list of texts."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="A served model id or alias; optional when one model is served.")
    inputs: NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1)]
    truncate: JsonBool = Field(True, description="Truncate over-long texts to the model's limit; false: 400 instead.")
    prompt_name: str | None = Field(
        None,
        validation_alias=AliasChoices("prompt_name", "task"),
        description="A prompt of the model's (also accepted as `task`); default: the model's default prompt.",
    )

    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else self.inputs


class SparseValue(BaseModel):
    index: int
    value: float


class EmbedResponse(BaseModel):
    embedding: list[float] | str = Field(description="The vector (a base64 string for embedding_type base64).")
    model: str
    dim: int
    tokens: int


class BatchEmbedResponse(BaseModel):
    embeddings: list[list[float]] | list[str]
    model: str
    dim: int
    tokens: int
    count: int


class NativeError(BaseModel):
    error: str
    error_type: str
