"""The ONNX Runtime runners serve `embedserve quantize` folders as the torch path serves the originals.

Each tiny family is exported once per session (the quantize tool's exporter), then loaded through
`load_model` with backend `onnx`; the reference is sentence-transformers / CrossEncoder on the
original folder.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from embedserve.models.embedder import Embedder
from embedserve.models.errors import ModelLoadError
from embedserve.models.loading import load_model
from embedserve.models.neighbours import neighbour_meter
from embedserve.models.pass_gate import SMALL_PASS_TOKENS
from embedserve.models.reranker import Reranker
from embedserve.models.sources import guess_backend, guess_kind, spec_from_cli
from embedserve.models.spec import ModelSpec
from tests.fixtures.tiny_models import BERT, GEMMA3, SAMPLE_TEXTS, XLMR
from tests.support import cosine_rows, until

TEXTS = [*SAMPLE_TEXTS.values(), "short", "a much longer sentence about libraries " * 60]
EMBEDDERS = {"bert": ("tiny_bert_dir", BERT), "xlmr": ("tiny_xlmr_dir", XLMR), "gemma3": ("tiny_gemma3_dir", GEMMA3)}
RERANKERS = {"xlmr-reranker": "tiny_reranker_dir", "bert-reranker-2": "tiny_bert_reranker_2_dir"}
QUERY = "Where do students find answers?"
HANG = 30.0  # seconds: only turns a hang into a failure


@pytest.fixture(scope="session")
def onnx_exports(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """family -> (original folder, exported folder), built lazily once per session."""
    from embedserve.quantize.export import export_model

    cache: dict[str, tuple[Path, Path]] = {}

    def get(request: pytest.FixtureRequest, family: str, fixture: str, kind: str) -> tuple[Path, Path]:
        if family not in cache:
            original = request.getfixturevalue(fixture)
            out = tmp_path_factory.mktemp(f"onnx-{family}")
            cache[family] = (original, export_model(original, out, kind=kind))
        return cache[family]

    return get


@pytest.fixture(scope="module", params=sorted(EMBEDDERS))
def embedder_case(request: pytest.FixtureRequest, onnx_exports):  # type: ignore[no-untyped-def]
    fixture, shape = EMBEDDERS[request.param]
    original, exported = onnx_exports(request, request.param, fixture, "embed")
    from sentence_transformers import SentenceTransformer

    model = load_model(ModelSpec(id=request.param, source=str(exported), backend="onnx")).model
    return model, SentenceTransformer(str(original), device="cpu"), shape


@pytest.fixture(scope="module", params=sorted(RERANKERS))
def reranker_case(request: pytest.FixtureRequest, onnx_exports):  # type: ignore[no-untyped-def]
    original, exported = onnx_exports(request, request.param, RERANKERS[request.param], "rerank")
    from sentence_transformers import CrossEncoder

    model = load_model(ModelSpec(id=request.param, source=str(exported), kind="rerank", backend="onnx")).model
    return model, CrossEncoder(str(original), device="cpu"), exported


def test_onnx_embeddings_equal_sentence_transformers(embedder_case) -> None:  # type: ignore[no-untyped-def]
    model, reference, shape = embedder_case
    assert isinstance(model, Embedder)
    assert model.info.backend == "onnx" and model.info.dtype == "float32" and model.info.width == shape.dimension
    got = model.finish(model.runner.run(model.tokenize(TEXTS)))
    expected = reference.encode(TEXTS, normalize_embeddings=True)
    assert cosine_rows(got, expected).min() >= 0.9999


def test_onnx_prompts_match_encode_with_each_prompt(embedder_case) -> None:  # type: ignore[no-untyped-def]
    model, reference, shape = embedder_case
    if not shape.prompts:
        pytest.skip("this family has no prompts")
    for name in model.info.prompts:
        got = model.finish(model.runner.run(model.tokenize(TEXTS, prompt_name=name)))
        expected = reference.encode(TEXTS, prompt_name=name, normalize_embeddings=True)
        assert cosine_rows(got, expected).min() >= 0.9999, name


def test_onnx_rerank_scores_equal_cross_encoder(reranker_case) -> None:  # type: ignore[no-untyped-def]
    import torch

    model, cross_encoder, _ = reranker_case
    assert isinstance(model, Reranker)
    docs = TEXTS
    logits = cross_encoder.predict([(QUERY, d) for d in docs], activation_fn=torch.nn.Identity())
    raw = model.runner.run(model.tokenize(QUERY, docs))
    np.testing.assert_allclose(raw, logits, atol=1e-4)


def test_an_exported_folder_is_recognised_from_a_model_flag(reranker_case) -> None:  # type: ignore[no-untyped-def]
    _, _, exported = reranker_case
    assert guess_kind(str(exported)) == "rerank" and guess_backend(str(exported)) == "onnx"
    spec = spec_from_cli(f"r={exported}")
    assert (spec.kind, spec.backend) == ("rerank", "onnx")


def test_asking_for_a_graph_the_folder_lacks_is_a_clear_error(reranker_case) -> None:  # type: ignore[no-untyped-def]
    _, _, exported = reranker_case
    with pytest.raises(ModelLoadError, match="no int8 graph"):
        load_model(ModelSpec(id="r", source=str(exported), kind="rerank", backend="onnx-int8"))
    with pytest.raises(ModelLoadError, match="rerank model"):
        load_model(ModelSpec(id="r", source=str(exported), kind="embed", backend="onnx"))


def test_a_torch_folder_is_not_an_onnx_model(tiny_bert_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="embedserve quantize"):
        load_model(ModelSpec(id="b", source=str(tiny_bert_dir), backend="onnx"))


def test_a_batch_of_mixed_lengths_runs_in_length_groups_and_each_row_is_its_item_alone(embedder_case) -> None:  # type: ignore[no-untyped-def]
    served, _, _ = embedder_case
    spec = ModelSpec(id="padded", source=str(served.runner._onnx.folder), backend="onnx", packing="off")
    model = load_model(spec).model
    assert not model.runner._onnx.packed
    session = model.runner._onnx.session
    texts = ["a", "b c", "short words", *[f"passage {i}: " + "libraries lend books to readers " * 20 for i in range(3)]]
    batch = model.tokenize(texts)
    passes: list[int] = []
    run = session.run

    class Counting:
        def run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            passes.append(len(args[1]["input_ids"]))
            return run(*args, **kwargs)

    model.runner._onnx.session = Counting()
    try:
        together = model.runner.run(batch)
        assert sorted(passes) == [3, 3], "the short three and the long three, each padded to its own longest"
        alone = np.concatenate([model.runner.run([item]) for item in batch])
    finally:
        model.runner._onnx.session = session
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_bert_and_xlmr_folders_run_several_texts_a_row_with_each_text_computed_alone(embedder_case) -> None:  # type: ignore[no-untyped-def]
    """The packed graph (quantize.packed_graph): short texts share rows, long ones get their own pass, and every
    text's vector is the one it gets alone and the one the padded graph gives."""
    model, _, _ = embedder_case
    onnx = model.runner._onnx
    if model.info.id == "gemma3":
        assert not onnx.packed and "packed" not in onnx.config["files"], "Gemma3 keeps the padded graph"
        return
    assert onnx.packed and onnx.config["files"]["packed"] == "model_packed.onnx"
    queries = [f"query {i}" + " words" * (i % 6) for i in range(12)]  # of unlike lengths: two or more to a row
    texts = [*queries, *(f"passage {i}: " + "libraries lend books " * 20 for i in range(2))]
    batch = model.tokenize(texts)
    session, shapes = onnx.session, []

    class Counting:
        def run(self, outputs, feeds):  # type: ignore[no-untyped-def]
            shapes.append(feeds["input_ids"].shape)
            return session.run(outputs, feeds)

    onnx.session = Counting()
    try:
        together = model.runner.run(batch)
    finally:
        onnx.session = session
    *short, widest = sorted(shapes, key=lambda shape: shape[1])
    assert widest[0] == 2 and sum(rows for rows, _ in short) < 12, f"12 queries in fewer rows, passages apart: {shapes}"
    alone = np.concatenate([model.runner.run([item]) for item in batch])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    padded = load_model(ModelSpec(id="p", source=str(onnx.folder), backend="onnx", packing="off")).model
    np.testing.assert_allclose(together, padded.runner.run(batch), atol=1e-5)
    tokens = model.runner.run_tokens(batch)
    assert [len(t) for t in tokens] == [len(item) for item in batch]
    for got, want in zip(tokens, padded.runner.run_tokens(batch), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("crowded", [False, True])
def test_two_batches_of_short_texts_run_their_passes_at_once_and_long_ones_only_beside_busy_neighbours(  # type: ignore[no-untyped-def]
    embedder_case, crowded: bool
) -> None:
    """A small pass shares the session's threads with another batch's; a big one runs alone, unless other processes
    are busy on the same CPUs (models.pass_gate, models.neighbours)."""
    model, _, _ = embedder_case
    onnx = model.runner._onnx
    session = onnx.session
    short = model.tokenize(["a short query", "another one"])
    long = model.tokenize([f"passage {i}: " + "libraries lend books to readers " * 40 for i in range(16)])
    assert len(long) * max(map(len, long)) > SMALL_PASS_TOKENS >= len(short) * max(map(len, short))
    both_inside = threading.Barrier(2, timeout=HANG)  # broken unless both passes that may overlap are in at once
    lock, inside, most, calls = threading.Lock(), [0], [0], []

    class Watching:
        def run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                calls.append(args[1]["input_ids"].size)
                first = len(calls) == 1
            try:
                if crowded or args[1]["input_ids"].size <= SMALL_PASS_TOKENS:
                    both_inside.wait()
                elif first:  # the other batch's big pass is held at the gate before this one ends
                    until(lambda: onnx.passes.waiting == 1, "the other big pass held at the gate", HANG, poll=0.001)
                return session.run(*args, **kwargs)
            finally:
                with lock:
                    inside[0] -= 1

    def twice(batch: list) -> list[np.ndarray]:  # type: ignore[type-arg]
        calls.clear()
        most[0] = 0
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(model.runner.run, [batch, batch]))

    onnx.session, meter = Watching(), onnx.passes.crowded
    onnx.passes.crowded = lambda: crowded  # this machine's neighbours (another test worker) are not the test's
    try:
        short_rows = twice(short)
        assert most[0] == 2 and len(calls) == 2
        long_rows = twice(long)
        assert most[0] == (2 if crowded else 1) and len(calls) == 2
    finally:
        onnx.session, onnx.passes.crowded = session, meter
    np.testing.assert_allclose(short_rows[0], short_rows[1], atol=1e-6)
    np.testing.assert_allclose(long_rows[0], model.runner.run(long), atol=1e-5)
    assert long_rows[0].shape == long_rows[1].shape
    np.testing.assert_allclose(long_rows[0], long_rows[1], atol=1e-6)


def test_an_onnx_session_on_cpu_asks_the_process_meter_whether_neighbours_are_busy(embedder_case) -> None:  # type: ignore[no-untyped-def]
    model, _, _ = embedder_case
    assert model.runner._onnx.passes.crowded == neighbour_meter().crowded


@pytest.mark.parametrize(
    ("threads", "quota", "workers"),
    [(2, None, 2), (1, None, 1), (4, None, 2), (2, 2.0, 2), (2, 1.5, 1), (4, 3.5, 1)],
)
def test_an_onnx_runner_runs_two_batches_at_once_unless_its_threads_or_its_cpu_quota_leave_no_core_idle(  # type: ignore[no-untyped-def]
    onnx_exports, request, monkeypatch: pytest.MonkeyPatch, threads: int, quota: float | None, workers: int
) -> None:
    _, exported = onnx_exports(request, "bert", "tiny_bert_dir", "embed")
    # The quota as the cgroup files would give it (tests/models/test_cpus.py reads such files).
    monkeypatch.setattr("embedserve.models.onnx_runner.cgroup_cpu_quota", lambda: quota)
    spec = ModelSpec(id="bert", source=str(exported), backend="onnx", threads=threads)
    assert load_model(spec).model.runner.cpu.workers == workers
