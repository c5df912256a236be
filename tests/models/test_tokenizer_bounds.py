"""Megabyte texts are cut before tokenizing, without changing a single token the model sees."""

from __future__ import annotations

import pytest

from embedserve.models.tokenizer import CHARS_PER_TOKEN_BOUND, PairTokenizer, TextTokenizer

LONG = "The library finds answers quickly, Студенты находят ответ. " * 40_000  # ~2.4 MB
# The reference tokenizer builds every pair of overflow windows when both texts overflow (quadratic),
# so pair cases stay just past the cut: ~12k characters.
PAIR_LONG = "The library finds answers quickly, Студенты находят ответ. " * 200
SPACEY = "first " + " " * (300 * CHARS_PER_TOKEN_BOUND) + "last words here"  # whitespace makes no tokens


@pytest.fixture(scope="module")
def hf_tokenizer(minilm_dir: str):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir)


def test_a_long_text_keeps_exactly_the_tokens_truncation_keeps(hf_tokenizer) -> None:  # type: ignore[no-untyped-def]
    ours = TextTokenizer(hf_tokenizer.backend_tokenizer, max_length=256, pad_id=0, vocab_size=30522, with_type_ids=True)
    for text in (LONG, SPACEY, "short"):
        (tokens,) = ours.encode([text])
        assert tokens.ids == hf_tokenizer(text, truncation=True, max_length=256)["input_ids"]
        assert tokens.truncated is (text is LONG)


@pytest.mark.parametrize("side", ["right", "left"])
def test_long_pairs_truncate_as_the_tokenizer_does(hf_tokenizer, side: str) -> None:  # type: ignore[no-untyped-def]
    hf_tokenizer.truncation_side = side
    ours = PairTokenizer(
        hf_tokenizer.backend_tokenizer, max_length=256, pad_id=0, with_type_ids=True, truncation_side=side
    )
    assert len(PAIR_LONG) > 256 * CHARS_PER_TOKEN_BOUND
    cases = [(PAIR_LONG, "a document"), ("a query", LONG), (PAIR_LONG, PAIR_LONG), (SPACEY, "doc"), ("q", SPACEY)]
    for query, document in cases:
        (tokens,) = ours.encode_pairs(query, [document])
        expected = hf_tokenizer(query, document, truncation=True, max_length=256)
        assert tokens.ids == expected["input_ids"]
        assert tokens.type_ids == expected["token_type_ids"]
