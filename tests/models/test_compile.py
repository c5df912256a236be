"""The compiled forward pass: same embeddings as the uncompiled modules, every shape compiled at load.

CPU tests use torch.compile's "eager" backend (EMBEDSERVE_COMPILE_BACKEND): dynamo traces and
guards exactly as with inductor, in about a second per graph; one test runs real inductor on one
bucket. The CUDA tests (skipped without a GPU) check the served dtypes against float32 and that a
batch waits for the device once.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from embedserve.models.compiled import BACKEND_ENV, LENGTHS_ENV, CompiledForward
from embedserve.models.loading import load_model
from embedserve.models.shapes import length_buckets
from embedserve.models.spec import ModelSpec
from embedserve.models.torch_embedding import TorchEmbeddingRunner
from embedserve.models.torch_loading import wants_compile
from embedserve.models.torch_rerank import TorchRerankRunner
from tests.fixtures.tiny_models import CORPUS

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MAX_LENGTH = 32  # two buckets (16, 32): two compiles per model
TEXTS = [*CORPUS, "short", "a b c " * 40]  # 3 to 32 tokens, one truncated


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from a second thread, and on a busy machine every op of theirs
    waits for it (OpenMP barriers): 0.25 s per batch instead of 5 ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def _batches(tokens: list) -> Iterator[list]:
    """Odd and even row counts (1 included, past the warmed maximum too), lengths in both buckets."""
    by_length = sorted(tokens, key=len)
    for rows in (1, 2, 3, 5, 7, 13, 31):
        for start in (0, len(by_length) // 3, len(by_length) - rows):
            yield by_length[start : start + rows]
    yield tokens[:20]  # unsorted: short and long together


@contextmanager
def no_recompiles() -> Iterator[None]:
    """Any recompile in the block raises instead of compiling, and so does a new graph."""
    before = _graphs()
    with torch._dynamo.config.patch(error_on_recompile=True):  # not monkeypatch: its undo breaks the config module
        yield
    assert _graphs() == before, "a batch compiled a new graph after warm-up"


def _compiled_and_plain(folder: Path, kind: str = "embed", lengths: str = "static"):  # type: ignore[no-untyped-def]
    spec = ModelSpec(backend="torch", id="m", source=str(folder), kind=kind, device="cpu", max_length=MAX_LENGTH)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(BACKEND_ENV, "eager")
        mp.setenv(LENGTHS_ENV, lengths)
        before = _graphs()
        loaded = load_model(spec.model_copy(update={"compile": "on"}), max_batch_tokens=256, max_batch_size=16)
        graphs = _graphs() - before
    cls = TorchRerankRunner if kind == "rerank" else TorchEmbeddingRunner
    return loaded.model.runner, cls(spec, str(folder)), graphs


@pytest.fixture(scope="module", params=["gemma3", "bert"])
def runners(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return _compiled_and_plain(request.getfixturevalue(f"tiny_{request.param}_dir"))


def test_load_compiles_one_graph_per_length_bucket(runners) -> None:  # type: ignore[no-untyped-def]
    compiled, _, graphs = runners
    forward = compiled._compiled
    assert forward.buckets == length_buckets(MAX_LENGTH) == (16, 32)
    assert forward.warmed == set(forward.buckets)
    assert graphs == len(forward.buckets)  # one graph each: no graph breaks in the chain
    assert forward.warm_seconds > 0


def test_compiled_embeddings_equal_the_uncompiled_ones(runners) -> None:  # type: ignore[no-untyped-def]
    compiled, plain, _ = runners
    tokens = compiled.tokenizer.encode(TEXTS)
    assert max(len(t) for t in tokens) == MAX_LENGTH and min(len(t) for t in tokens) <= 16
    with no_recompiles():
        for batch in _batches(tokens):
            got, want = compiled.run(batch), plain.run(batch)
            assert got.shape == want.shape == (len(batch), compiled.info.width)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert compiled._compiled.eager_batches == 0


def test_a_compiled_reranker_scores_as_the_uncompiled_one(tiny_reranker_dir: Path) -> None:
    compiled, plain, graphs = _compiled_and_plain(tiny_reranker_dir, kind="rerank")
    assert graphs == 2
    with no_recompiles():
        for docs in (TEXTS[:1], TEXTS[:7], TEXTS[30:46]):
            batch = compiled.tokenizer.encode_pairs("what is the capital?", docs)
            np.testing.assert_allclose(compiled.run(batch), plain.run(batch), rtol=0, atol=1e-5)


def test_dynamic_lengths_compile_one_graph_for_every_bucket(tiny_xlmr_dir: Path) -> None:
    compiled, plain, graphs = _compiled_and_plain(tiny_xlmr_dir, lengths="dynamic")
    assert compiled._compiled.warmed == {16, 32} and graphs == 1
    with no_recompiles():
        for batch in _batches(compiled.tokenizer.encode(TEXTS)):
            np.testing.assert_allclose(compiled.run(batch), plain.run(batch), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=LENGTHS_ENV):
        CompiledForward(compiled._modules, "sentence_embedding", max_length=16, lengths="sometimes")


@pytest.mark.parametrize("family", ["gemma3", "xlmr", "bert"])
def test_padding_to_a_bucket_changes_no_embedding(family: str, request: pytest.FixtureRequest) -> None:
    """Pooling (mean, CLS) reads the attention mask, so extra pad positions are ignored."""
    folder = request.getfixturevalue(f"tiny_{family}_dir")
    runner = TorchEmbeddingRunner(ModelSpec(backend="torch", id="m", source=str(folder), device="cpu"), str(folder))
    batch = runner.tokenizer.encode(TEXTS[:9])
    longest = max(len(t) for t in batch)

    def embed(width: int | None) -> np.ndarray:
        with torch.inference_mode():
            features = {k: torch.from_numpy(v) for k, v in runner.tokenizer.pad(batch, width=width).items()}
            for module in runner._modules:
                features = module(features)
            return features["sentence_embedding"].numpy()

    np.testing.assert_allclose(embed(longest + 37), embed(None), rtol=0, atol=1e-5)
    with pytest.raises(ValueError):
        runner.tokenizer.pad(batch, width=longest - 1)


def test_an_unwarmed_bucket_runs_uncompiled_without_compiling(tiny_bert_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(BACKEND_ENV, "eager")
    spec = ModelSpec(
        backend="torch", id="m", source=str(tiny_bert_dir), device="cpu", max_length=MAX_LENGTH, compile="on"
    )
    runner = TorchEmbeddingRunner(spec, str(tiny_bert_dir))  # not warmed
    before = _graphs()
    out = runner.run(runner.tokenizer.encode(TEXTS[:3]))
    assert out.shape == (3, runner.info.width)
    assert _graphs() == before and runner._compiled.eager_batches == 1


def test_compile_auto_is_off_on_cpu(tiny_bert_dir: Path) -> None:
    runner = TorchEmbeddingRunner(
        ModelSpec(backend="torch", id="m", source=str(tiny_bert_dir), device="cpu"), str(tiny_bert_dir)
    )
    assert runner.warm(max_batch_tokens=64, max_batch_size=4) is None
    assert wants_compile("auto", "cuda") and wants_compile("auto", "cuda:1")
    assert not wants_compile("auto", "cpu") and not wants_compile("auto", "mps")
    assert wants_compile("on", "cpu") and not wants_compile("off", "cuda")


def test_a_failed_compile_serves_uncompiled_unless_compile_was_asked_for(tiny_bert_dir: Path) -> None:
    def broken(gm, example_inputs):  # type: ignore[no-untyped-def]
        raise RuntimeError("no compiler here")

    runner = TorchEmbeddingRunner(
        ModelSpec(backend="torch", id="m", source=str(tiny_bert_dir), device="cpu"), str(tiny_bert_dir)
    )
    sample = runner.tokenizer.encode(["warm up"])[0]
    lenient = CompiledForward(runner._modules, "sentence_embedding", max_length=MAX_LENGTH, backend=broken)
    lenient.warm(runner.tokenizer, sample, torch.device("cpu"), max_batch_tokens=64, max_batch_size=4)
    assert not lenient.warmed
    assert lenient.pad(runner.tokenizer, [sample]) is None  # runs uncompiled

    strict = CompiledForward(runner._modules, "sentence_embedding", max_length=16, backend=broken, required=True)
    with pytest.raises(Exception, match="no compiler here"):
        strict.warm(runner.tokenizer, sample, torch.device("cpu"), max_batch_tokens=64, max_batch_size=4)


def test_compile_setting_in_a_models_file(tmp_path: Path) -> None:
    from embedserve.server.config.models_file import load_models_file

    models_file = tmp_path / "models.yaml"
    models_file.write_text("models:\n  - {id: a, source: s, compile: on}\n  - {id: b, source: s, compile: off}\n")
    assert [entry.spec().compile for entry in load_models_file(models_file)] == ["on", "off"]  # YAML 1.1 booleans
    assert ModelSpec(id="m", source="s").compile == "auto"
    with pytest.raises(ValueError):
        ModelSpec(id="m", source="s", compile="sometimes")


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="inductor on CPU needs a C compiler")
def test_inductor_compiles_the_gemma_chain(tiny_gemma3_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The real backend on one bucket (~25 s on 2 cores, less with inductor's on-disk cache)."""
    monkeypatch.setenv(BACKEND_ENV, "inductor")
    spec = ModelSpec(backend="torch", id="m", source=str(tiny_gemma3_dir), device="cpu", max_length=16)
    compiled = load_model(spec.model_copy(update={"compile": "on"}), max_batch_tokens=64, max_batch_size=4)
    runner = compiled.model.runner
    assert runner._compiled.warmed == {16}
    plain = TorchEmbeddingRunner(spec, str(tiny_gemma3_dir))
    with no_recompiles():
        for rows in (1, 3, 6):
            batch = runner.tokenizer.encode(TEXTS[10 : 10 + rows])
            np.testing.assert_allclose(runner.run(batch), plain.run(batch), rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# ---------------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (_unit(a) * _unit(b)).sum(1)


@cuda
@pytest.mark.parametrize(("family", "dtype"), [("gemma3", "bfloat16"), ("bert", "float16"), ("xlmr", "float16")])
def test_cuda_serves_in_half_precision_within_tolerance(family: str, dtype: str, request, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(BACKEND_ENV, raising=False)  # inductor
    folder = request.getfixturevalue(f"tiny_{family}_dir")
    spec = ModelSpec(backend="torch", id="m", source=str(folder), max_length=MAX_LENGTH)  # device, dtype, compile: auto
    runner = load_model(spec, max_batch_tokens=256, max_batch_size=16).model.runner
    assert runner.info.device.startswith("cuda") and runner.info.dtype == dtype
    assert runner._compiled is not None and runner._compiled.warmed == set(length_buckets(MAX_LENGTH))
    reference = TorchEmbeddingRunner(spec.model_copy(update={"device": "cpu", "dtype": "float32"}), str(folder))
    with no_recompiles():
        for batch in _batches(runner.tokenizer.encode(TEXTS)):
            got, want = runner.run(batch), reference.run(batch)
            assert got.dtype == np.float32
            assert _cosines(got, want).min() > 0.999
            np.testing.assert_allclose(_unit(got), _unit(want), rtol=0, atol=2e-2)
    assert runner._compiled.eager_batches == 0


@cuda
def test_a_cuda_batch_waits_for_the_device_once(tiny_gemma3_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Inputs go through pinned memory asynchronously; the result copy is the one synchronisation."""
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    spec = ModelSpec(backend="torch", id="m", source=str(tiny_gemma3_dir), max_length=MAX_LENGTH)
    runner = load_model(spec, max_batch_tokens=256, max_batch_size=16).model.runner
    batches = [runner.tokenizer.encode(TEXTS[i : i + 5]) for i in (0, 20, 40)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for batch in batches:
                runner.run(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= len(batches), [str(w.message) for w in syncs]
