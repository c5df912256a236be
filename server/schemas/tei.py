"""TEI's request and response bodies beyond /embed and /rerank: /similarity and /info."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from server.schemas.fields import JsonBool, NonEmptyText


class SimilarityInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_sentence: NonEmptyText
    sentences: Annotated[list[NonEmptyText], Field(min_length=1)]


class SimilarityRequest(BaseModel):
    """TEI's /similarity (huggingface_hub's `sentence_similarity`): the cosine of each sentence to the source."""

    model_config = ConfigDict(extra="ignore")  # TEI's `parameters` (truncate, prompt_name...) go in the body here

    inputs: SimilarityInputs
    model: str | None = Field(
        None, description="A served embedding model; default: the X-Model header, or the only one."
    )
    truncate: JsonBool = Field(True, description="Truncate over-long texts to the model's limit; false: 400 instead.")
    prompt_name: str | None = Field(None, description="A prompt of the model's; default: the model's default prompt.")


class Info(BaseModel):
    """TEI's /info, for the model chosen as on every TEI route."""

    model_id: str
    model_sha: str | None = None
    model_dtype: str
    model_type: dict
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None = None
    docker_label: str | None = None
