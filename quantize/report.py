"""How close INT8 stays to fp32, and how fast each backend is on this machine.

Accuracy runs on the multilingual evaluation set (`quantize.eval_texts`): embedders by the cosine of
each text's INT8 embedding with its fp32 one (mean, min, per language, the worst five texts) and by
retrieval over the same set (each text as a query: do its ten nearest neighbours stay the same, and
does the ranking keep its order); rerankers by the Spearman correlation of INT8 scores with fp32
scores, how often the top documents stay the same, and the worst five queries.
Speed is items/s of torch, ONNX fp32 and ONNX INT8 on the same items in batches of 32, each timed
for a bounded number of seconds after one warm-up pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from embedserve.quantize import eval_texts
from embedserve.quantize.texts import RERANK_SETS
from embedserve.quantize.texts import language as script_language

WORST = 5


def language(text: str) -> str:
    """The evaluation set's group of a text (en, de, ..., code, short, long); by script otherwise."""
    group = eval_texts.language(text)
    return group if group != "other" else script_language(text)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged, as Spearman's rho needs."""
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    # Each run of equal values gets the mean of the ranks it spans.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
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


def _shown(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def embed_accuracy(reference: np.ndarray, quantized: np.ndarray, texts: Sequence[str]) -> dict[str, Any]:
    cos = cosines(reference, quantized)
    langs = np.array([language(t) for t in texts])
    worst = np.argsort(cos, kind="stable")[:WORST]
    return {
        "metric": "cosine int8 vs fp32",
        "items": len(texts),
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "by_language": {
            lang: {
                "items": int((langs == lang).sum()),
                "mean_cosine": float(cos[langs == lang].mean()),
                "min_cosine": float(cos[langs == lang].min()),
            }
            for lang in sorted(set(langs.tolist()))
        },
        "worst": [{"cosine": float(cos[i]), "language": str(langs[i]), "text": _shown(texts[i])} for i in worst],
        "retrieval": retrieval_agreement(reference, quantized),
    }


def retrieval_agreement(reference: np.ndarray, quantized: np.ndarray, *, k: int = 10) -> dict[str, Any]:
    """Every item as a query over all the others, by cosine: the share of its `k` nearest neighbours
    under fp32 that INT8 also returns (mean and worst query), how often the nearest one is the same,
    and the Spearman correlation of the similarity scores per query (the bi-encoder used as a
    reranker over the whole set)."""

    def similarities(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return sims

    ref, got = similarities(reference), similarities(quantized)
    n = len(ref)
    k = min(k, n - 1)
    if k < 1:
        return {"queries": n, "k": k}
    ref_top = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    got_top = np.argsort(-got, axis=1, kind="stable")[:, :k]
    overlap = np.array([len(set(a) & set(b)) / k for a, b in zip(ref_top.tolist(), got_top.tolist())])
    off = ~np.eye(n, dtype=bool)
    rho = np.array([spearman(ref[i][off[i]], got[i][off[i]]) for i in range(n)])
    return {
        "queries": n,
        "k": k,
        f"top{k}_overlap": float(overlap.mean()),
        f"min_top{k}_overlap": float(overlap.min()),
        "top1_agreement": float((ref_top[:, 0] == got_top[:, 0]).mean()),
        "mean_query_spearman": float(rho.mean()),
        "min_query_spearman": float(rho.min()),
    }


def rerank_accuracy(
    reference: np.ndarray,
    quantized: np.ndarray,
    *,
    k: int = 3,
    sets: Sequence[tuple[str, Sequence[str]]] = RERANK_SETS,
) -> dict[str, Any]:
    """Over query sets whose pairs are in `reference` in order (default: the built-in sets, in
    `rerank_pairs()` order)."""
    ref, got = relevance(reference), relevance(quantized)
    per_set, top1, topk = [], [], []
    start = 0
    for _, docs in sets:
        r, g = ref[start : start + len(docs)], got[start : start + len(docs)]
        start += len(docs)
        per_set.append(spearman(r, g))
        top1.append(int(np.argmax(r) == np.argmax(g)))
        topk.append(len(set(np.argsort(-r)[:k]) & set(np.argsort(-g)[:k])) / k)
    worst = np.argsort(np.array(per_set), kind="stable")[:WORST]
    return {
        "metric": "score agreement int8 vs fp32",
        "items": len(ref),
        "queries": len(per_set),
        "spearman": spearman(ref, got),
        "mean_query_spearman": float(np.mean(per_set)),
        "min_query_spearman": float(np.min(per_set)),
        "top1_agreement": float(np.mean(top1)),
        f"top{k}_agreement": float(np.mean(topk)),
        "max_abs_logit_diff": float(np.abs(np.asarray(reference) - np.asarray(quantized)).max()),
        "worst": [
            {"spearman": float(per_set[i]), "language": language(sets[i][1][0]), "query": _shown(sets[i][0])}
            for i in worst
        ],
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


EXPECTED_SPEED: dict[str, str] = {
    "avx512_vnni": "INT8 1.70x ONNX fp32 on mixed, 2.89x on short (MiniLM, AMD EPYC with AVX-512 VNNI, "
    "`python -m bench`, 2026-11-29)",
    "avx2": "INT8 0.85x ONNX fp32 on mixed, 0.90x on short (MiniLM, AMD EPYC with AVX2 only, `python -m bench`, "
    "2026-12): serve the fp32 graph (`backend: onnx`) there",
    "arm64": "not measured on ARM hardware (the arm64 image is checked for accuracy under qemu only)",
}
"""What INT8 pays per CPU kind, measured where that kind was at hand: the report prints the rows of the ISAs
a folder runs on exactly, since this host's own figure says nothing of the others."""
