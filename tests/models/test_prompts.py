"""Named prompts: a request's `prompt_name` picks a prefix; with none, the model's default prompt."""

from __future__ import annotations

import pytest

from embedserve.models.errors import InvalidInput
from embedserve.models.prompts import prompt_text
from embedserve.models.types import ModelInfo


def info(prompts: dict[str, str], default: str | None = None) -> ModelInfo:
    return ModelInfo(
        id="gemma",
        kind="embed",
        width=8,
        max_length=32,
        backend="torch",
        device="cpu",
        dtype="float32",
        normalized=True,
        prompts=prompts,
        default_prompt=default,
    )


PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}


def test_a_named_prompt_is_its_prefix() -> None:
    assert prompt_text(info(PROMPTS), "query") == "task: search result | query: "
    assert prompt_text(info(PROMPTS, default="query"), "document") == "title: none | text: "


def test_no_name_is_the_default_prompt_or_nothing() -> None:
    assert prompt_text(info(PROMPTS, default="document"), None) == "title: none | text: "
    assert prompt_text(info(PROMPTS), None) == ""
    assert prompt_text(info({}), None) == ""


def test_an_unknown_name_is_invalid_input_listing_the_models_prompts() -> None:
    with pytest.raises(InvalidInput) as error:
        prompt_text(info(PROMPTS), "passage")
    assert error.value.param == "prompt_name"
    assert "has no prompt 'passage'; its prompts: document, query" in str(error.value)
    with pytest.raises(InvalidInput, match="its prompts: none"):
        prompt_text(info({}), "query")
