"""Compact embedding types, as sentence-transformers' `quantize_embeddings` defines them (numpy only, so
a torch-free server has them too), for vectors already finished (normalized, cut to `dimensions`).

- `float`: the vector; `base64`: its little-endian float32 bytes, base64-encoded.
- `binary` / `ubinary`: one bit per dimension, set where the value is > 0, packed 8 to a byte (the first
  dimension in the high bit), as int8 (byte - 128) or uint8: 32x smaller than float32; the Hamming
  distance between two of them ranks like the angle between the vectors.
- `int8` / `uint8`: each dimension mapped linearly from its calibration range [lo, hi] onto 256 steps,
  uint8 = clip(floor((x - lo) / ((hi - lo) / 255)), 0, 255) and int8 = uint8 - 128, so values outside
  the range are clipped to its ends. The ranges are each dimension's
  minimum and maximum over the model's own embeddings of a fixed calibration set (models/texts.py).
"""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np

OutputType = Literal["float", "base64", "int8", "uint8", "binary", "ubinary"]
OUTPUT_TYPES: tuple[OutputType, ...] = ("float", "base64", "int8", "uint8", "binary", "ubinary")
CALIBRATED: frozenset[str] = frozenset({"int8", "uint8"})


def calibration_ranges(vectors: np.ndarray) -> np.ndarray:
    """[2, dimensions]: per-dimension minimum and maximum of calibration vectors."""
    return np.stack([vectors.min(axis=0), vectors.max(axis=0)]).astype(np.float32)


def encode(vectors: np.ndarray, kind: OutputType, ranges: np.ndarray | None = None) -> np.ndarray | list:
    """One JSON-ready value per vector: float32 rows stay an array (orjson writes them directly, as
    float32, without a list of Python floats), the other types are lists of ints or base64 strings."""
    if kind == "float":
        return vectors.astype(np.float32, copy=False)
    if kind == "base64":
        return [base64.b64encode(row.astype("<f4", copy=False).tobytes()).decode("ascii") for row in vectors]
    if kind in ("binary", "ubinary"):
        packed = np.packbits(vectors > 0, axis=-1)
        return (packed.astype(np.int16) - 128).tolist() if kind == "binary" else packed.tolist()
    if kind in CALIBRATED:
        if ranges is None:
            raise ValueError(f"{kind} needs calibration ranges")
        low, high = ranges[0, : vectors.shape[1]], ranges[1, : vectors.shape[1]]
        steps = np.where(high > low, (high - low) / 255, 1.0)
        levels = np.clip(np.floor((vectors - low) / steps), 0, 255).astype(np.int16)
        return (levels - 128).tolist() if kind == "int8" else levels.tolist()
    raise ValueError(f"unknown output type {kind!r}; choose from {', '.join(OUTPUT_TYPES)}")
