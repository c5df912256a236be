"""Batches move to the model's device and results come back as float32 numpy arrays, unchanged.

The CUDA path (pinned memory, one event wait) runs only where a GPU is lent; on CPU the same calls
are plain copies (a float32 result may share its tensor's memory: each batch's output is new).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from embedserve.models.transfer import to_device, to_host  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_arrays_arrive_as_tensors_with_their_values_and_dtypes(device: str) -> None:
    arrays = {
        "input_ids": np.array([[101, 7592, 102, 0]], dtype=np.int64),
        "attention_mask": np.array([[1, 1, 1, 0]], dtype=np.int64),
    }
    with torch.inference_mode():
        tensors = to_device(arrays, torch.device(device))
    assert set(tensors) == set(arrays)
    for name, tensor in tensors.items():
        assert tensor.device.type == device and tensor.dtype == torch.int64
        np.testing.assert_array_equal(tensor.cpu().numpy(), arrays[name])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_results_come_back_as_float32_numpy(device: str, dtype: str) -> None:
    values = torch.tensor([[0.5, -1.25, 3.0], [0.0, 2.5, -0.75]], dtype=getattr(torch, dtype), device=device)
    host = to_host(values)
    assert isinstance(host, np.ndarray) and host.dtype == np.float32 and host.shape == (2, 3)
    np.testing.assert_array_equal(host, [[0.5, -1.25, 3.0], [0.0, 2.5, -0.75]])
