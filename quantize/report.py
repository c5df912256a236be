"""How close INT8 stays to fp32, and how fast each backend is on this machine.

Accuracy runs on the built-in multilingual set (`quantize.texts`): embedders by the cosine of each
sentence's INT8 embedding with its fp32 one (mean, min, per language); rerankers by the Spearman
correlation of INT8 scores with fp32 scores and how often the top documents stay the same.
Speed is items/s of torch, ONNX fp32 and ONNX INT8 on the same items in batches of 32, each timed
for a bounded number of seconds after one warm-up pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from quantize.texts import RERANK_SETS, language


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged, as Spearman's rho needs."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else 1.0 if np.array_equal(ra, rb) else 0.0


def relevance(logits: np.ndarray) -> np.ndarray:
    """One ranking score per pair: the logit, or the last label's log-probability (monotonic in
    the softmax probability the server returns for multi-label classifiers)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1 or logits.shape[1] == 1:
        return logits.reshape(len(logits))
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted[:, -1] - np.log(np.exp(shifted).sum(axis=1))


def embed_accuracy(reference: np.ndarray, quantized: np.ndarray, texts: Sequence[str]) -> dict[str, Any]:
    cos = cosines(reference, quantized)
    langs = np.array([language(t) for t in texts])
    return {
        "metric": "cosine int8 vs fp32",
        "items": len(texts),
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "by_language": {
            lang: {"mean_cosine": float(cos[langs == lang].mean()), "min_cosine": float(cos[langs == lang].min())}
            for lang in sorted(set(langs.tolist()))
        },
    }


def rerank_accuracy(reference: np.ndarray, quantized: np.ndarray, *, k: int = 3) -> dict[str, Any]:
    """Over the built-in query sets (their pairs in `rerank_pairs()` order)."""
    ref, got = relevance(reference), relevance(quantized)
    per_set, top1, topk = [], [], []
    start = 0
    for _, docs in RERANK_SETS:
        r, g = ref[start : start + len(docs)], got[start : start + len(docs)]
        start += len(docs)
        per_set.append(spearman(r, g))
        top1.append(int(np.argmax(r) == np.argmax(g)))
        topk.append(len(set(np.argsort(-r)[:k]) & set(np.argsort(-g)[:k])) / k)
    return {
        "metric": "score agreement int8 vs fp32",
        "items": len(ref),
        "spearman": spearman(ref, got),
        "mean_query_spearman": float(np.mean(per_set)),
        "top1_agreement": float(np.mean(top1)),
        f"top{k}_agreement": float(np.mean(topk)),
        "max_abs_logit_diff": float(np.abs(np.asarray(reference) - np.asarray(quantized)).max()),
    }


def items_per_second(run: Callable[[], int], seconds: float) -> float:
    """Calls `run` (which returns how many items it processed) once to warm up, then until
    `seconds` have passed (at least once); returns items per second."""
    run()
    done, started = 0, time.perf_counter()
    while True:
        done += run()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


def speed(backends: dict[str, Callable[[], int]], seconds: float) -> dict[str, Any]:
    """items/s per backend, and each one's ratio to torch's."""
    figures: dict[str, Any] = {"seconds_per_backend": seconds, "batch_size": 32}
    rates = {name: items_per_second(run, seconds) for name, run in backends.items()}
    figures["items_per_second"] = {name: round(rate, 2) for name, rate in rates.items()}
    if rates.get("torch"):
        figures["vs_torch"] = {name: round(rate / rates["torch"], 3) for name, rate in rates.items()}
    return figures
