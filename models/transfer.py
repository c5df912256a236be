"""Moving a batch to the model's device and its result back, with one synchronisation per batch.

On CUDA the inputs go through pinned (page-locked) host memory, so their copies are asynchronous
DMA transfers queued on the stream ahead of the forward pass, and the result comes back through a
pinned buffer followed by a wait on one event: the only point where the host waits for the GPU.
Elsewhere (CPU, MPS) tensors are made and read back as plain copies.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_device(arrays: dict[str, np.ndarray], device: Any) -> dict[str, Any]:
    """A padded batch's arrays as tensors on `device` (call under inference_mode)."""
    import torch

    if device.type == "cuda":
        return {name: torch.from_numpy(a).pin_memory().to(device, non_blocking=True) for name, a in arrays.items()}
    return {name: torch.from_numpy(a).to(device, non_blocking=True) for name, a in arrays.items()}


def to_host(tensor: Any) -> np.ndarray:
    """The tensor as a float32 numpy array; on CUDA the batch's one wait for the device."""
    import torch

    tensor = tensor.float()
    if tensor.device.type != "cuda":
        return tensor.cpu().numpy()
    host = torch.empty(tensor.shape, dtype=torch.float32, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(tensor.device))
    done.synchronize()
    # A pageable copy, so the pinned block goes back to torch's host allocator for the next batch.
    return host.numpy().copy()
