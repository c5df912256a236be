"""Pooling and activations in numpy (what the ONNX runner and the torch-free server use) equal
sentence-transformers' and torch's own."""

from __future__ import annotations

import numpy as np
import pytest

from embedserve.models.pooling import POOLING_MODES, pool


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_numpy_pooling_equals_sentence_transformers(mode: str) -> None:
    import torch
    from sentence_transformers.sentence_transformer.modules import Pooling

    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(3, 6, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=np.int64)
    module = Pooling(8, pooling_mode=mode)
    want = module({"token_embeddings": torch.from_numpy(hidden), "attention_mask": torch.from_numpy(mask)})
    np.testing.assert_allclose(pool(hidden, mask, mode), want["sentence_embedding"].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["identity", "tanh", "relu", "gelu", "sigmoid"])
def test_numpy_activations_equal_torch(activation: str) -> None:
    import torch

    from embedserve.models.pooling import ACTIVATIONS

    x = np.linspace(-4, 4, 41, dtype=np.float32)
    torch_fn = {
        "identity": torch.nn.Identity(),
        "tanh": torch.nn.Tanh(),
        "relu": torch.nn.ReLU(),
        "gelu": torch.nn.GELU(),
        "sigmoid": torch.nn.Sigmoid(),
    }[activation]
    np.testing.assert_allclose(ACTIVATIONS[activation](x), torch_fn(torch.from_numpy(x)).numpy(), atol=1e-6)
