"""The registry resolves a request's model name (id or alias) to one served model of the asked kind."""

from __future__ import annotations

import pytest

from embedserve.models.errors import UnknownModel
from embedserve.models.registry import ModelRegistry
from embedserve.models.spec import ModelSpec

MINILM = ModelSpec(id="minilm", source="/m/minilm", aliases=("sentence-transformers/all-MiniLM-L6-v2", "small"))
BGE = ModelSpec(id="bge-m3", source="/m/bge-m3")
RERANKER = ModelSpec(id="rr", source="/m/rr", kind="rerank", aliases=("reranker",))


def test_ids_and_aliases_resolve_to_their_spec() -> None:
    registry = ModelRegistry([MINILM, BGE, RERANKER])
    assert registry.resolve("minilm", "embed") is MINILM
    assert registry.resolve("small", "embed") is MINILM
    assert registry.resolve("sentence-transformers/all-MiniLM-L6-v2", "embed") is MINILM
    assert registry.resolve("reranker", "rerank") is RERANKER
    assert registry.ids() == ["minilm", "bge-m3", "rr"]
    assert registry.ids("rerank") == ["rr"]


def test_no_name_means_the_only_model_of_that_kind() -> None:
    registry = ModelRegistry([MINILM, RERANKER])
    assert registry.resolve(None, "embed") is MINILM
    assert registry.resolve(None, "rerank") is RERANKER


def test_no_name_with_several_of_a_kind_lists_them() -> None:
    with pytest.raises(UnknownModel) as unknown:
        ModelRegistry([MINILM, BGE]).resolve(None, "embed")
    assert unknown.value.served == ["minilm", "bge-m3"]
    assert "name one of: minilm, bge-m3" in str(unknown.value)


def test_an_unknown_name_or_the_wrong_kind_is_unknown() -> None:
    registry = ModelRegistry([MINILM, RERANKER])
    with pytest.raises(UnknownModel, match="'gpt-9' is not served; served embed models: minilm"):
        registry.resolve("gpt-9", "embed")
    with pytest.raises(UnknownModel) as wrong_kind:
        registry.resolve("minilm", "rerank")
    assert wrong_kind.value.name == "minilm" and wrong_kind.value.served == ["rr"]


def test_a_name_used_twice_is_refused_naming_both_owners() -> None:
    clash = ModelSpec(id="other", source="/m/other", aliases=("small",))
    with pytest.raises(ValueError, match="'small' is used by both 'minilm' and 'other'"):
        ModelRegistry([MINILM, clash])


def test_an_alias_repeating_the_id_is_not_a_clash() -> None:
    spec = ModelSpec(id="minilm", source="/m", aliases=("minilm",))
    assert ModelRegistry([spec]).resolve("minilm", "embed") is spec


def test_an_empty_registry_serves_nothing() -> None:
    registry = ModelRegistry([])
    assert registry.ids() == []
    with pytest.raises(UnknownModel):
        registry.resolve(None, "embed")
