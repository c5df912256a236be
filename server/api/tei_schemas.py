"""TEI's request and response bodies beyond /embed and /rerank: /similarity, /info, /embed_all,
/tokenize, /decode and /predict."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from embedserve.models.classifier import Function
from embedserve.server.api.fields import JsonBool, NonEmptyText, NonNegativeInt, PositiveInt


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


class EmbedAllRequest(BaseModel):
    """TEI's /embed_all: every token's vector (the last hidden state), special tokens included."""

    model_config = ConfigDict(extra="forbid")

    inputs: NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1)]
    model: str | None = Field(
        None, description="A served embedding model; default: the X-Model header, or the only one."
    )
    truncate: JsonBool = Field(True, description="Truncate over-long texts to the model's limit; false: 400 instead.")
    truncation_direction: Literal["right", "Right"] = Field("right", description="Only right truncation is done.")
    prompt_name: str | None = Field(None, description="A prompt of the model's; default: the model's default prompt.")

    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else self.inputs


class TokenizeRequest(BaseModel):
    """TEI's /tokenize: how the model's tokenizer splits each text."""

    model_config = ConfigDict(extra="forbid")

    inputs: StrictStr | Annotated[list[StrictStr], Field(min_length=1)]
    model: str | None = Field(None, description="A served model; default: the X-Model header, or the only one.")
    add_special_tokens: JsonBool = Field(True, description="Show the special tokens the model adds ([CLS], [SEP]...).")
    prompt_name: str | None = Field(None, description="An embedder's prompt, tokenized before the text.")

    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else self.inputs


class SimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class DecodeRequest(BaseModel):
    """TEI's /decode: token ids back to text."""

    model_config = ConfigDict(extra="forbid")

    ids: (
        Annotated[list[NonNegativeInt], Field(min_length=1)]
        | Annotated[list[Annotated[list[NonNegativeInt], Field(min_length=1)]], Field(min_length=1)]
    )
    model: str | None = Field(None, description="A served model; default: the X-Model header, or the only one.")
    skip_special_tokens: JsonBool = Field(True, description="Leave out the special tokens.")

    def sequences(self) -> list[list[int]]:
        return [self.ids] if self.ids and isinstance(self.ids[0], int) else self.ids  # type: ignore[list-item,return-value]


class ClassificationParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    top_k: PositiveInt | None = None
    function_to_apply: Function | None = None


PredictInput = (
    NonEmptyText
    | Annotated[
        list[NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1, max_length=2)]], Field(min_length=1)
    ]
)


class PredictRequest(BaseModel):
    """TEI's /predict, for sequence-classification models: `inputs` is a text, a pair `[a, b]`, or a batch
    of texts and pairs (`["a", "b", "c"]`, `[["a", "b"]]`), as TEI reads it: a list of exactly two texts is
    one pair."""

    model_config = ConfigDict(extra="forbid")

    inputs: PredictInput
    model: str | None = Field(None, description="A served classifier; default: the X-Model header, or the only one.")
    raw_scores: JsonBool = Field(False, description="Logits instead of probabilities (softmax; sigmoid for one label).")
    truncate: JsonBool = Field(True, description="Truncate over-long texts to the model's limit; false: 400 instead.")
    truncation_direction: Literal["right", "Right"] = Field("right", description="Only right truncation is done.")
    prompt_name: str | None = Field(None, description="A prompt of the model's; default: the model's default prompt.")
    parameters: ClassificationParameters | None = Field(
        None, description="huggingface_hub's text_classification parameters (POST /): top_k, function_to_apply."
    )

    def batch(self) -> tuple[list[str | tuple[str, str]], bool]:
        """The inputs, and whether they came as a batch (answered as a list per input)."""
        value = self.inputs
        if isinstance(value, str):
            return [value], False
        if len(value) == 2 and all(isinstance(v, str) for v in value):
            return [(value[0], value[1])], False  # type: ignore[list-item]
        batch: list[str | tuple[str, str]] = []
        for item in value:
            if isinstance(item, str):
                batch.append(item)
            elif len(item) == 2:
                batch.append((item[0], item[1]))
            else:
                batch.append(item[0])
        return batch, True


class Prediction(BaseModel):
    score: float
    label: str
