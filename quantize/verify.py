"""Parity of an exported folder with PyTorch: the export is only kept when onnxruntime, fed the way
the server feeds it, reproduces sentence-transformers' own output.

Embedders are compared twice: per token (the graph's last_hidden_state against the torch model's
on identical padded arrays, which catches a causal mask or a sliding window that went missing)
and per sentence (the numpy pipeline's embedding against `SentenceTransformer.encode`).
Rerankers: logits against `CrossEncoder.predict` with the identity activation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from embedserve.quantize.onnx_eval import ExportedModel
from embedserve.quantize.pipeline import ExportError
from embedserve.quantize.texts import RERANK_SETS, SENTENCES, long_text

MIN_COSINE = 0.9999
MAX_ABS_DIFF = 1e-4


def verification_texts(
    max_length: int, sliding_window: int | None, count_tokens: Callable[[str], int]
) -> list[list[str]]:
    """Batches to compare: English, Korean and Russian sentences, then (alone, so the short ones
    are not padded to it) one text longer than the attention window or the model's limit, capped
    near 1.25x the window so a long-context model still verifies in seconds."""
    picks = [SENTENCES[i] for i in (0, 3, 10, 13, 16, 22, 25, 28, 34)]
    target = min(max_length + 8, max(160, int(1.25 * sliding_window) if sliding_window else 0))
    words = 16
    while count_tokens(long_text(words)) < target and words < 50 * target:
        words = int(words * 1.3) + 1
    return [picks, [long_text(words), picks[0]]]


def verification_pairs() -> list[tuple[str, str]]:
    pairs = [(q, d) for q, docs in RERANK_SETS for d in docs[:2]]
    pairs.append((RERANK_SETS[0][0], long_text(600)))
    return pairs


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def verify_embedder(
    folder: Path, st_model: Any, batches: list[list[str]], min_cosine: float = MIN_COSINE, file: str = "model.onnx"
) -> dict[str, float]:
    """The folder's graph `file` against PyTorch: every token's and text's cosine must reach `min_cosine`."""
    import torch

    onnx = ExportedModel(folder, file)
    token_cos, got, want = [], [], []
    for texts in batches:
        arrays = onnx.tokenize(texts)
        hidden = onnx.hidden(arrays)
        with torch.inference_mode():
            features = {k: torch.from_numpy(v) for k, v in arrays.items()}
            reference = st_model[0].auto_model(**features).last_hidden_state.float().numpy()
        mask = arrays["attention_mask"].astype(bool)
        token_cos.append(_cosines(hidden[mask], reference[mask]))
        got.append(onnx.embed(texts))
        want.append(st_model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False))
    texts = [t for batch in batches for t in batch]
    token_cos_all, got_all, want_all = np.concatenate(token_cos), np.concatenate(got), np.concatenate(want)
    sentence_cos = _cosines(got_all, want_all)
    figures = {
        "min_token_cosine": float(token_cos_all.min()),
        "min_cosine": float(sentence_cos.min()),
        "max_abs_diff": float(np.abs(got_all - want_all).max()),
        "texts": len(texts),
        "longest_tokens": int(max(len(t) for t in onnx.texts.encode(texts))) if onnx.texts else 0,
    }
    token_cos = token_cos_all
    if token_cos.min() < min_cosine or sentence_cos.min() < min_cosine:
        worst = int(sentence_cos.argmin())
        raise ExportError(
            f"ONNX output differs from PyTorch: min token cosine {token_cos.min():.6f}, min sentence cosine "
            f"{sentence_cos.min():.6f} (text {worst}: {texts[worst][:40]!r}); need >= {min_cosine}"
        )
    return figures


def verify_reranker(folder: Path, cross_encoder: Any, pairs: list[tuple[str, str]]) -> dict[str, float]:
    import torch

    onnx = ExportedModel(folder)
    got = onnx.score(pairs)
    want = cross_encoder.predict(
        pairs, batch_size=len(pairs), activation_fn=torch.nn.Identity(), convert_to_numpy=True, show_progress_bar=False
    )
    want = np.asarray(want, dtype=np.float32).reshape(got.shape)
    diff = float(np.abs(got - want).max())
    if not diff <= MAX_ABS_DIFF:
        raise ExportError(f"ONNX logits differ from CrossEncoder.predict by up to {diff:.2e}; need <= {MAX_ABS_DIFF}")
    return {"max_abs_diff": diff, "pairs": len(pairs)}
