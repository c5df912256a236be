"""Sentence-transformers' pooling modes and Dense activations in numpy, for runners without torch.

The same arithmetic as sentence_transformers' Pooling and Dense modules, so the ONNX runner's
embeddings (and the quantize tool's checks of them) match the torch path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """sentence-transformers' Pooling on a padded batch (either side): hidden [b, s, h], mask [b, s]."""
    m = mask.astype(hidden.dtype)[..., None]
    if mode == "cls":
        return hidden[np.arange(len(hidden)), mask.argmax(axis=1)]
    if mode == "max":
        return np.where(m > 0, hidden, -np.inf).max(axis=1)
    if mode in ("mean", "mean_sqrt_len_tokens"):
        total = (hidden * m).sum(axis=1)
        count = np.maximum(m.sum(axis=1), 1e-9)
        return total / (count if mode == "mean" else np.sqrt(count))
    if mode == "weightedmean":
        weights = m * np.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype)[None, :, None]
        return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    if mode == "lasttoken":
        last = hidden.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
        return hidden[np.arange(len(hidden)), last] * m[np.arange(len(hidden)), last]
    raise ValueError(f"unknown pooling mode {mode!r}; known: {', '.join(POOLING_MODES)}")


_erf = np.vectorize(math.erf, otypes=[np.float32])


def _gelu(x: np.ndarray) -> np.ndarray:
    """torch's exact GELU (erf form); Dense layers are small, so a vectorized erf is fast enough."""
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


ACTIVATIONS = {
    "identity": lambda x: x,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "gelu": _gelu,
}


def dense(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, activation: str) -> np.ndarray:
    """A sentence-transformers Dense layer: activation(x @ W^T + b)."""
    y = x @ weight.T
    if bias is not None:
        y = y + bias
    try:
        return ACTIVATIONS[activation](y)
    except KeyError:
        raise ValueError(f"unknown Dense activation {activation!r}; known: {', '.join(ACTIVATIONS)}") from None


@dataclass(slots=True)
class DenseLayer:
    weight: np.ndarray  # [out, in], float32
    bias: np.ndarray | None  # [out]
    activation: str


def load_dense(folder: Path, entries: Sequence[dict[str, Any]]) -> list[DenseLayer]:
    """The Dense layers an exported folder's embedserve.json lists (`dense_<i>.npz` files)."""
    layers = []
    for entry in entries:
        with np.load(folder / entry["file"]) as arrays:
            bias = arrays["bias"].astype(np.float32) if "bias" in arrays.files else None
            layers.append(DenseLayer(arrays["weight"].astype(np.float32), bias, entry.get("activation", "identity")))
    return layers


def sentence_embeddings(hidden: np.ndarray, mask: np.ndarray, mode: str, layers: Sequence[DenseLayer]) -> np.ndarray:
    """Pooling then the Dense layers, from the graph's last_hidden_state: float32 (batch, dimension)."""
    x = pool(hidden.astype(np.float32, copy=False), mask, mode)
    for layer in layers:
        x = dense(x, layer.weight, layer.bias, layer.activation)
    return np.ascontiguousarray(x, dtype=np.float32)


def l2_normalize(rows: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (a zero row stays zero), float32: the one normalization every
    path uses (local models, upstream answers, quantize's reference embeddings)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.ascontiguousarray(rows / np.maximum(norms, 1e-12), dtype=np.float32)
