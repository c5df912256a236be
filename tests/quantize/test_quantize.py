"""INT8 on the real all-MiniLM-L6-v2 with the default settings, and the tool's decisions and
records on tiny models (in process, and end to end through `python -m embedserve.quantize`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _embed(folder: Path, file: str, texts: list[str]) -> np.ndarray:
    """Embeddings straight from onnxruntime and the HF tokenizer (not the tool's own evaluator)."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    session = ort.InferenceSession(str(folder / file), providers=["CPUExecutionProvider"])
    features = dict(tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="np"))
    hidden = session.run(None, {k: v.astype(np.int64) for k, v in features.items()})[0]
    mask = features["attention_mask"][..., None]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_minilm_int8_stays_close_to_fp32(minilm_int8: Path) -> None:
    from embedserve.quantize.texts import SENTENCES

    texts = list(SENTENCES)
    fp32, int8 = _embed(minilm_int8, "model.onnx", texts), _embed(minilm_int8, "model_int8.onnx", texts)
    cos = (fp32 * int8).sum(1)
    assert cos.mean() >= 0.99
    assert cos.min() >= 0.95

    manifest = json.loads((minilm_int8 / "manifest.json").read_text())
    assert manifest["accuracy"]["mean_cosine"] == pytest.approx(float(cos.mean()), abs=2e-3)
    assert manifest["accuracy"]["mean_cosine"] >= 0.99
    assert set(manifest["accuracy"]["by_language"]) == {
        *("en", "de", "es", "ru", "ar", "zh", "ja", "ko"),
        *("code", "short", "long"),
    }


def test_minilm_int8_meets_the_floor_on_the_evaluation_set(minilm_int8: Path) -> None:
    """The gate's figures, recomputed here from the folder: every text of the evaluation set within
    0.99 of fp32, the mean within 0.997, and retrieval over the set keeping its neighbours."""
    from embedserve.quantize.eval_texts import eval_texts
    from embedserve.quantize.onnx_eval import ExportedModel
    from embedserve.quantize.report import cosines, retrieval_agreement

    texts = list(eval_texts())
    fp32 = ExportedModel(minilm_int8).embed(texts)
    int8 = ExportedModel(minilm_int8, "model_int8.onnx").embed(texts)
    cos = cosines(fp32, int8)
    assert cos.min() >= 0.99 and cos.mean() >= 0.997, (cos.min(), cos.mean())
    assert retrieval_agreement(fp32, int8)["top10_overlap"] >= 0.95

    accuracy = json.loads((minilm_int8 / "manifest.json").read_text())["accuracy"]
    assert accuracy["items"] == len(texts) >= 300
    assert accuracy["min_cosine"] == pytest.approx(float(cos.min()), abs=1e-6)
    assert accuracy["threshold"] == {"mean_cosine": 0.997, "min_cosine": 0.99}
    worst = accuracy["worst"]
    assert len(worst) == 5 and [w["cosine"] for w in worst] == sorted(float(c) for c in np.sort(cos)[:5])
    assert worst[0]["cosine"] == accuracy["min_cosine"] and all(w["text"] and w["language"] for w in worst)
    assert accuracy["retrieval"]["top10_overlap"] >= 0.95


def test_minilm_int8_vector_does_not_depend_on_its_batch(minilm_int8: Path) -> None:
    """A text embeds to the same vector alone, in any batch and at any position (float32 round-off),
    batched with short, long (past 256 tokens, truncated) and outlier-heavy texts. Per-tensor
    dynamic INT8 moved the Korean sentence here to cosine 0.98 of itself."""
    from embedserve.quantize.eval_texts import CODE, SHORT, TOPICS, eval_texts, language
    from embedserve.quantize.onnx_eval import ExportedModel

    korean = "이 식당의 김치찌개는 정말 맛있어요. 다음에 또 오고 싶어요."
    long = [t for t in eval_texts() if language(t) == "long"]
    texts = [korean, *SHORT[:6], "!!!!!!!!!!!!!!!!!!!! ?????", CODE[9], TOPICS[18][1][7], long[0], long[3]]
    texts += [TOPICS[i][1][i % 8] for i in range(0, 35, 5)]
    model = ExportedModel(minilm_int8, "model_int8.onnx")
    alone = np.concatenate([model.embed([t]) for t in texts])
    rng = np.random.default_rng(0)
    batches = [np.arange(len(texts)), np.arange(len(texts))[::-1], rng.permutation(len(texts))]
    for order in batches:
        for size in (len(texts), 4):
            got = model.embed([texts[i] for i in order], batch_size=size)
            diff = float(np.abs(got - alone[order]).max())
            assert diff <= 1e-5, (size, diff)


def test_minilm_int8_graph_is_quantized(minilm_int8: Path) -> None:
    import onnx

    graph = onnx.load(str(minilm_int8 / "model_int8.onnx"))
    ops = [node.op_type for node in graph.graph.node]
    assert set(ops) & {"MatMulInteger", "DynamicQuantizeMatMul", "QAttention", "MatMulIntegerToFloat"}
    # Per-token activation scales: no per-tensor DynamicQuantizeLinear left, and every MatMul with a
    # weight is INT8 but the ones the search kept fp32.
    manifest = json.loads((minilm_int8 / "manifest.json").read_text())
    assert "DynamicQuantizeLinear" not in ops
    assert ops.count("MatMulIntegerToFloat") == 36 - len(manifest["quantization"]["exclude"])

    def size(graph: str) -> int:  # the graph and the external weights it reads (model.onnx shares its file)
        proto = onnx.load(str(minilm_int8 / graph), load_external_data=False)
        external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        lengths = (int(e.value) for t in external for e in t.external_data if e.key == "length")
        return (minilm_int8 / graph).stat().st_size + sum(lengths)

    # Transformer weights shrink 4x; the embedding table (47 MB of MiniLM's 90) stays fp32.
    assert size("model_int8.onnx") < 0.8 * size("model.onnx")
    assert (minilm_int8 / "model_int8.onnx.data").is_file()  # weights the server memory-maps
    config = json.loads((minilm_int8 / "embedserve.json").read_text())
    assert config["files"] == {"fp32": "model.onnx", "int8": "model_int8.onnx", "packed": "model_packed.onnx"}
    assert (minilm_int8 / "weights.onnx.data").is_file()  # the packed graph's weights, memory-mapped too
    assert not (minilm_int8 / ".quantize-work").exists()


def test_minilm_manifest_records_provenance_and_report(minilm_int8: Path, minilm_dir: str) -> None:
    m = json.loads((minilm_int8 / "manifest.json").read_text())
    assert m["source"] == minilm_dir and m["kind"] == "embed" and m["model_type"] == "bert"
    assert m["target"] == "portable" and m["mode"] == "dynamic"  # the default: one folder for every CPU
    assert isinstance(m["opset"], int) and m["opset"] >= 14
    q = m["quantization"]
    assert q["per_channel"] is True and q["written"] is True and q["refused"] is None
    assert q["reduce_range"] is True and q["weight_bits"] == 7 and q["exact_on"] == ["avx2", "avx512_vnni", "arm64"]
    assert isinstance(q["exclude"], list) and len(q["exclude"]) <= 9
    for name in ("torch", "transformers", "optimum", "onnxruntime", "onnx"):
        assert m["versions"][name], name
    speed = m["speed"]["items_per_second"]
    assert set(speed) == {"torch", "onnx_fp32", "onnx_int8"} and min(speed.values()) > 0
    assert m["export"]["verification"]["min_cosine"] >= 0.9999
    datetime.strptime(m["timestamp"], "%Y-%m-%dT%H:%M:%SZ")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "embedserve.quantize", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_cli_refuses_below_threshold_and_force_writes(tiny_bert_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "refused"
    common = ["--bench-seconds", "0.2", "--no-progress", "--min-cosine", "0.99999"]
    result = _cli(str(tiny_bert_dir), "--out", str(out), *common)
    assert result.returncode == 3, result.stderr
    assert "refused" in result.stdout
    # Not a terminal: a line as each step starts and ends, and nothing alarming that is not a problem.
    assert "quantize: step 1/6: export\n" in result.stderr and "quantize: step 6/6: benchmark done in " in result.stderr
    assert "Weight deduplication" not in result.stderr and "failed" not in result.stderr
    assert "with optimum" in result.stdout
    assert not (out / "model_int8.onnx").exists()
    assert (out / "model.onnx").is_file()
    assert json.loads((out / "embedserve.json").read_text())["files"]["int8"] is None
    q = json.loads((out / "manifest.json").read_text())["quantization"]
    assert q["written"] is False and "below the threshold" in q["refused"]

    # in-process: the refusal above tested the process and its exit status
    assert _run_in_process(str(tiny_bert_dir), "--out", str(out), *common, "--force") == 0
    assert (out / "model_int8.onnx").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"]["written"] is True and manifest["quantization"]["forced"] is True
    assert json.loads((out / "embedserve.json").read_text())["files"]["int8"] == "model_int8.onnx"


def _run_in_process(*argv: str) -> int:
    from embedserve.quantize.cli import main

    return main(list(argv))


def test_default_threshold_writes_tiny_int8(tiny_bert_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bert"
    assert _run_in_process(str(tiny_bert_dir), "--out", str(out), "--bench-seconds", "0", "--no-progress") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["accuracy"]["mean_cosine"] >= 0.99 and manifest["speed"] is None
    assert (out / "model_int8.onnx").is_file()


def test_static_mode_with_calibration_file(tiny_bert_dir: Path, tmp_path: Path) -> None:
    import onnx

    from tests.fixtures.tiny_models import CORPUS

    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n".join(CORPUS[::2]) + "\n", encoding="utf-8")
    out = tmp_path / "static"
    code = _run_in_process(
        str(tiny_bert_dir),
        "--out",
        str(out),
        "--mode",
        "static",
        "--calibration",
        str(calibration),
        "--bench-seconds",
        "0",
        "--no-progress",
        "--force",
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mode"] == "static" and manifest["quantization"]["quant_format"] == "QDQ"
    assert manifest["quantization"]["calibration"] == str(calibration)
    ops = {n.op_type for n in onnx.load(str(out / "model_int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_static_mode_needs_calibration(tiny_bert_dir: Path, tmp_path: Path) -> None:
    assert _run_in_process(str(tiny_bert_dir), "--out", str(tmp_path / "x"), "--mode", "static") == 2
    assert not (tmp_path / "x").exists()


def test_reranker_report_and_optimize(tiny_bert_reranker_2_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rr"
    code = _run_in_process(
        str(tiny_bert_reranker_2_dir),
        *("--out", str(out), "--optimize", "--bench-seconds", "0.2", "--no-progress", "--force"),
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"spearman", "mean_query_spearman", "top1_agreement", "top3_agreement"} <= set(manifest["accuracy"])
    assert manifest["optimization"]["applied"] is True
    assert manifest["optimization"]["fused_ops"].get("Attention", 0) >= 1
    assert manifest["kind"] == "rerank" and set(manifest["speed"]["items_per_second"]) == {
        "torch",
        "onnx_fp32",
        "onnx_int8",
    }


def with_outlier_channel(source: Path, out: Path, factor: float = 1000.0) -> Path:
    """A copy of a reranker with one hidden channel a thousand times louder than the rest after the
    embeddings: the activation outlier that per-tensor INT8 scales cannot carry (the rest round to zero),
    while float32 keeps every channel. Smoothing (a constant per channel) carries it."""
    import torch
    from transformers import AutoModelForSequenceClassification

    shutil.copytree(source, out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    norm = model.base_model.embeddings.LayerNorm
    with torch.no_grad():
        norm.weight[0] *= factor
        norm.bias[0] += factor
    model.save_pretrained(out)
    return out


def with_outlier_weights(source: Path, out: Path, factor: float = 1e7) -> Path:
    """A copy of a reranker whose first layer's attention weights each have one entry ten million
    times larger than the rest, on an input channel the embeddings' LayerNorm makes exactly zero:
    float32 never feels them, but each weight column's INT8 scale is set by its outlier and the
    real weights round to zero. No activation scale or smoothing constant can fix that, so its INT8
    graph really ranks unlike the model."""
    import torch
    from transformers import AutoModelForSequenceClassification

    shutil.copytree(source, out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    norm = model.base_model.embeddings.LayerNorm
    attention = model.base_model.encoder.layer[0].attention.self
    with torch.no_grad():
        norm.weight[0] = 0.0
        norm.bias[0] = 0.0
        for linear in (attention.query, attention.key, attention.value):
            linear.weight[:, 0] = factor
    model.save_pretrained(out)
    return out


def test_the_reranker_gate_refuses_int8_that_ranks_unlike_the_model(tiny_reranker_dir: Path, tmp_path: Path) -> None:
    source = with_outlier_weights(tiny_reranker_dir, tmp_path / "outlier")
    refused = tmp_path / "refused"
    options = ("--bench-seconds", "0", "--no-progress")
    assert _run_in_process(str(source), "--out", str(refused), *options) == 3
    manifest = json.loads((refused / "manifest.json").read_text())
    measured = manifest["accuracy"]["spearman"]
    assert measured < 0.95
    assert manifest["quantization"]["written"] is False and "below the threshold" in manifest["quantization"]["refused"]
    assert not (refused / "model_int8.onnx").exists()
    # The same model passes a bar below what it measured: the gate decides by the measurement.
    passed, bar = tmp_path / "passed", measured - 0.05
    assert _run_in_process(str(source), "--out", str(passed), *options, "--min-spearman", str(bar)) == 0
    assert json.loads((passed / "manifest.json").read_text())["accuracy"]["spearman"] >= bar
    assert (passed / "model_int8.onnx").is_file()


def test_optimize_skips_families_without_fusions(tiny_gemma3_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "gemma"
    _run_in_process(
        str(tiny_gemma3_dir), "--out", str(out), "--optimize", "--bench-seconds", "0", "--no-progress", "--force"
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["optimization"]["applied"] is False
    assert "gemma3_text" in manifest["optimization"]["reason"]
    assert (out / "model_int8.onnx").is_file()


def test_add_parser_wires_into_another_cli() -> None:
    import argparse

    from embedserve.quantize.cli import add_parser, run

    parser = argparse.ArgumentParser(prog="embedserve")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["quantize", "some/model", "--out", "x", "--target", "arm64", "--min-cosine", "0.98"])
    assert args.handler is run
    assert (args.source, args.out, args.target, args.min_cosine, args.mode) == (
        "some/model",
        Path("x"),
        "arm64",
        0.98,
        "dynamic",
    )


def test_export_failure_exits_1_and_writes_no_graph(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import LayerNorm, Pooling, Transformer

    source = tmp_path / "src"
    modules = [Transformer(str(tiny_bert_dir)), Pooling(32), LayerNorm(32)]
    SentenceTransformer(modules=modules, device="cpu").save(str(source), create_model_card=False)
    out = tmp_path / "out"
    assert _run_in_process(str(source), "--out", str(out), "--bench-seconds", "0", "--no-progress") == 1
    assert not (out / "model.onnx").exists() and not (out / "model_int8.onnx").exists()


def test_the_gate_refuses_on_the_worst_text_even_when_the_mean_passes(
    tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The floor is its own bar: a mean that passes does not carry a text below the minimum. The
    refusal says which bar failed, and the report names the five worst texts."""
    out = tmp_path / "floor"
    common = ["--bench-seconds", "0", "--no-progress", "--mean-cosine", "0.5"]
    assert _run_in_process(str(tiny_bert_dir), "--out", str(out), *common, "--min-cosine", "0.99999") == 3
    manifest = json.loads((out / "manifest.json").read_text())
    accuracy, q = manifest["accuracy"], manifest["quantization"]
    assert accuracy["mean_cosine"] >= 0.5 and accuracy["min_cosine"] < 0.99999
    assert "min_cosine" in q["refused"] and "mean_cosine" not in q["refused"]
    assert not (out / "model_int8.onnx").exists()
    worst = accuracy["worst"]
    assert len(worst) == 5 and worst[0]["cosine"] == accuracy["min_cosine"]
    assert [w["cosine"] for w in worst] == sorted(w["cosine"] for w in worst)
    shown = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("worst:")]
    assert len(shown) == 5 and worst[0]["text"][:20] in shown[0]

    # The same model against a floor just under what it measured: written.
    bar = f"{accuracy['min_cosine'] - 0.02:.6f}"
    assert _run_in_process(str(tiny_bert_dir), "--out", str(tmp_path / "ok"), *common, "--min-cosine", bar) == 0
    assert (tmp_path / "ok" / "model_int8.onnx").is_file()


def test_an_outlier_channel_is_carried_by_smoothing(tiny_reranker_dir: Path, tmp_path: Path) -> None:
    """The channel per-tensor INT8 could not carry (it ranked unlike the model, Spearman < 0.95):
    per-row scales with that channel smoothed rank as the model does."""
    source = with_outlier_channel(tiny_reranker_dir, tmp_path / "outlier")
    out = tmp_path / "int8"
    assert _run_in_process(str(source), "--out", str(out), "--bench-seconds", "0", "--no-progress") == 0
    accuracy = json.loads((out / "manifest.json").read_text())["accuracy"]
    assert accuracy["spearman"] >= 0.95 and len(accuracy["worst"]) == 5


def test_a_saturating_host_judges_full_range_weights_by_their_exact_twin(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On x86 without VNNI (set here, so this holds on any host) a `--target arm64` graph is judged by the
    integers ARM computes, its exact twin's, never by the host's clipped sums (which refused good ARM
    folders on AVX2 hosts); 7-bit weights, which the host computes exactly, by the graph itself."""
    from embedserve.quantize.build import Options, quantize_model
    from embedserve.quantize.eval_texts import eval_texts
    from embedserve.quantize.exact import exact_twin
    from embedserve.quantize.onnx_eval import ExportedModel
    from embedserve.quantize.report import cosines

    monkeypatch.setattr("embedserve.quantize.build.host_isa", lambda: "avx2")
    out = tmp_path / "arm64"
    outcome = quantize_model(tiny_bert_dir, out, Options(target="arm64", force=True, bench_seconds=0, progress=False))
    q = outcome.manifest["quantization"]
    assert (q["weight_bits"], q["evaluated_on"], q["exact_on"]) == (8, "avx2", ["avx512_vnni", "arm64"])
    assert q["evaluated_with"].startswith("exact integer twin")
    exact_twin(out / "model_int8.onnx", out / "exact.onnx")
    texts = list(eval_texts())
    cos = cosines(ExportedModel(out).outputs(texts), ExportedModel(out, "exact.onnx").outputs(texts))
    assert outcome.manifest["accuracy"]["min_cosine"] == pytest.approx(float(cos.min()), abs=1e-6)
    assert outcome.manifest["accuracy"]["mean_cosine"] == pytest.approx(float(cos.mean()), abs=1e-6)

    portable = quantize_model(
        tiny_bert_dir, tmp_path / "portable", Options(force=True, bench_seconds=0, progress=False)
    )
    assert portable.manifest["quantization"]["evaluated_with"] == "this host's kernels"
