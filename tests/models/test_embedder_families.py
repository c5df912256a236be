"""Each family through our own loading path equals sentence-transformers' encode of the same folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedserve.models.errors import InvalidInput, ModelLoadError
from embedserve.models.loading import LoadedModel, load_model
from embedserve.models.spec import ModelSpec
from tests.fixtures.tiny_models import BERT, GEMMA3, SAMPLE_TEXTS, XLMR, bert_embedder, gemma3_embedder, xlmr_embedder
from tests.support import cosine_rows

TEXTS = [*SAMPLE_TEXTS.values(), "short", "a much longer sentence " * 60]
FAMILIES = {"gemma3": GEMMA3, "xlmr": XLMR, "bert": BERT}
BUILDERS = {"gemma3": gemma3_embedder, "xlmr": xlmr_embedder, "bert": bert_embedder}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest, tiny_model_dirs) -> tuple[str, Path]:  # type: ignore[no-untyped-def]
    return request.param, getattr(tiny_model_dirs, request.param)


@pytest.fixture(scope="module")
def loaded(family: tuple[str, Path]) -> LoadedModel:
    name, folder = family
    return load_model(ModelSpec(backend="torch", id=name, source=str(folder), device="cpu"))


@pytest.fixture(scope="module")
def reference(family: tuple[str, Path]):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(family[1]), device="cpu")


def embed(loaded: LoadedModel, texts: list[str], **options) -> np.ndarray:  # type: ignore[no-untyped-def]
    embedder = loaded.model
    prompt_name = options.pop("prompt_name", None)
    raw = embedder.runner.run(embedder.tokenize(texts, prompt_name=prompt_name))
    return embedder.finish(raw, **options)


def test_info_comes_from_the_folder(family: tuple[str, Path], loaded: LoadedModel) -> None:
    shape = FAMILIES[family[0]]
    info = loaded.model.info
    assert info.width == shape.dimension
    assert info.normalized is shape.normalized
    assert set(info.prompts) == {name for name, text in (shape.prompts or {}).items() if text}


def test_embeddings_equal_sentence_transformers(loaded: LoadedModel, reference) -> None:  # type: ignore[no-untyped-def]
    expected = reference.encode(TEXTS, normalize_embeddings=True)
    assert cosine_rows(embed(loaded, TEXTS), expected).min() >= 0.9999


def test_each_prompt_matches_encode_with_that_prompt(family: tuple[str, Path], loaded: LoadedModel, reference) -> None:  # type: ignore[no-untyped-def]
    prompts = FAMILIES[family[0]].prompts
    if not prompts:
        pytest.skip(f"{family[0]} has no prompts")
    plain = embed(loaded, TEXTS)
    for name in {"query", "document", "passage", "STS"} & set(prompts):
        got = embed(loaded, TEXTS, prompt_name=name)
        expected = reference.encode(TEXTS, prompt_name=name, normalize_embeddings=True)
        assert cosine_rows(got, expected).min() >= 0.9999, name
        assert cosine_rows(got, plain).max() < 0.9999, f"prompt {name} changed nothing"


def test_unknown_prompt_is_refused_with_the_known_ones(family: tuple[str, Path], loaded: LoadedModel) -> None:
    with pytest.raises(InvalidInput, match="no prompt 'nope'"):
        loaded.model.tokenize(["x"], prompt_name="nope")


def test_matryoshka_dimensions_truncate_then_renormalize(loaded: LoadedModel, reference) -> None:  # type: ignore[no-untyped-def]
    half = loaded.model.info.width // 2
    got = embed(loaded, TEXTS, dimensions=half)
    full = reference.encode(TEXTS, normalize_embeddings=True)[:, :half]
    assert got.shape == (len(TEXTS), half)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert cosine_rows(got, full).min() >= 0.9999


def test_mixed_lengths_in_one_padded_batch_equal_one_at_a_time(loaded: LoadedModel) -> None:
    together = embed(loaded, TEXTS)
    alone = np.concatenate([embed(loaded, [t]) for t in TEXTS])
    assert cosine_rows(together, alone).min() >= 0.9999


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_hub_layout_folders_load_the_same(name: str, tmp_path: Path, tiny_model_dirs) -> None:  # type: ignore[no-untyped-def]
    """Folders as published on the hub (older module names and config keys) load identically."""
    hub = load_model(
        ModelSpec(backend="torch", id=name, source=str(BUILDERS[name](tmp_path / "hub", layout="hub")), device="cpu")
    )
    current = load_model(ModelSpec(backend="torch", id=name, source=str(getattr(tiny_model_dirs, name)), device="cpu"))
    assert cosine_rows(embed(hub, TEXTS), embed(current, TEXTS)).min() >= 0.9999


def test_gemma3_refuses_float16_with_a_clear_message(tiny_gemma3_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="float16.*overflow"):
        load_model(ModelSpec(backend="torch", id="gemma", source=str(tiny_gemma3_dir), device="cpu", dtype="float16"))


def test_gemma3_runs_in_bfloat16_close_to_float32(tiny_gemma3_dir: Path) -> None:
    low = load_model(
        ModelSpec(backend="torch", id="gemma", source=str(tiny_gemma3_dir), device="cpu", dtype="bfloat16")
    )
    high = load_model(ModelSpec(backend="torch", id="gemma", source=str(tiny_gemma3_dir), device="cpu"))
    assert low.model.info.dtype == "bfloat16"
    assert cosine_rows(embed(low, TEXTS), embed(high, TEXTS)).min() > 0.98


def test_models_file_prompts_override_and_set_the_default(tiny_bert_dir: Path) -> None:
    spec = ModelSpec(
        backend="torch",
        id="e5",
        source=str(tiny_bert_dir),
        device="cpu",
        prompts={"query": "search_query: "},
        default_prompt="query",
    )
    loaded = load_model(spec)
    assert loaded.model.info.prompts["query"] == "search_query: "
    assert loaded.model.prompt(None) == "search_query: "
    assert loaded.model.tokenize(["x"]) == loaded.model.runner.tokenizer.encode(["x"], prompt="search_query: ")


@pytest.mark.parametrize(
    ("folder", "runner"), [("tiny_modernbert_dir", "PackedModernBert"), ("tiny_qwen3_dir", "PackedQwen3")]
)
def test_modernbert_and_qwen3_serve_packed_as_sentence_transformers_encode(
    folder: str, runner: str, request: pytest.FixtureRequest
) -> None:
    """Served with `backend: torch`, they run packed (the server pads right; Qwen3's own tokenizer pads
    left) and still give encode's embeddings, with and without the query prompt, to 1e-5."""
    from sentence_transformers import SentenceTransformer

    source = str(request.getfixturevalue(folder))
    loaded = load_model(ModelSpec(backend="torch", id="packed", source=source, device="cpu"))
    assert type(loaded.model.runner._packed).__name__ == runner
    reference = SentenceTransformer(source, device="cpu")
    for prompt_name in (None, "query"):
        expected = reference.encode(TEXTS, prompt_name=prompt_name, normalize_embeddings=True)
        assert np.abs(embed(loaded, TEXTS, prompt_name=prompt_name) - expected).max() <= 1e-5, prompt_name
    padded = load_model(ModelSpec(backend="torch", id="padded", source=source, device="cpu", packing="off"))
    assert padded.model.runner._packed is None
