"""Scoring a query against documents from bge-m3's three outputs, as FlagEmbedding's BGEM3FlagModel
(`compute_score`) scores them: a reranker made of an embedding model.

- multi-vector (ColBERT): MaxSim, each query row's best dot product with a document row, averaged over
  the query's rows (the rows are L2-normalized, so dot products are cosines);
- sparse: the lexical match, the sum over the token ids both texts have of the product of their weights;
- dense: the dot product of the L2-normalized vectors;
- hybrid: the weighted sum of the three, divided by the weights' sum (FlagEmbedding's defaults 0.4 dense,
  0.2 sparse, 0.4 multi-vector).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedserve.models.types import SparseVector

DEFAULT_WEIGHTS = (0.4, 0.2, 0.4)
"""Dense, sparse and multi-vector: FlagEmbedding's weights_for_different_modes."""


def maxsim(query: np.ndarray, documents: Sequence[np.ndarray]) -> np.ndarray:
    """Per document, the mean over the query's rows of its best dot product with the document's rows."""
    return np.array([float((query @ rows.T).max(axis=1).mean()) for rows in documents], dtype=np.float32)


def lexical_match(query: SparseVector, documents: Sequence[SparseVector]) -> np.ndarray:
    """Per document, the sum of the products of the weights of the token ids it shares with the query."""
    scores = []
    for document in documents:
        _, q, d = np.intersect1d(query.indices, document.indices, assume_unique=True, return_indices=True)
        scores.append(float(np.dot(query.values[q], document.values[d])))
    return np.array(scores, dtype=np.float32)


def hybrid(
    dense: np.ndarray, sparse: np.ndarray, colbert: np.ndarray, weights: Sequence[float] = DEFAULT_WEIGHTS
) -> np.ndarray:
    """The weighted sum of the three scores, divided by the weights' sum."""
    w_dense, w_sparse, w_colbert = weights
    total = w_dense * dense + w_sparse * sparse + w_colbert * colbert
    return (total / (w_dense + w_sparse + w_colbert)).astype(np.float32)
