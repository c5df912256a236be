"""Compact output types equal sentence-transformers' `quantize_embeddings` on the same vectors, and
binary vectors rank neighbours like the floats do."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from embedserve.models.output_types import calibration_ranges, encode


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rows = np.random.default_rng(0).normal(size=(64, 384)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["binary", "ubinary"])
def test_binary_types_equal_sentence_transformers(vectors: np.ndarray, kind: str) -> None:
    from sentence_transformers.util.quantization import quantize_embeddings

    got = np.array(encode(vectors, kind))  # type: ignore[arg-type]
    want = quantize_embeddings(vectors, precision=kind)
    assert got.shape == (64, 48) and np.array_equal(got, want.astype(np.int16))


@pytest.mark.parametrize("kind", ["int8", "uint8"])
def test_calibrated_types_equal_sentence_transformers_with_the_same_ranges(vectors: np.ndarray, kind: str) -> None:
    from sentence_transformers.util.quantization import quantize_embeddings

    ranges = calibration_ranges(vectors)
    got = np.array(encode(vectors, kind, ranges))  # type: ignore[arg-type]
    want = quantize_embeddings(vectors, precision=kind, ranges=ranges)
    assert np.array_equal(got, want.astype(np.int16))
    low, high = (-128, 127) if kind == "int8" else (0, 255)
    assert got.min() >= low and got.max() <= high


def test_values_outside_the_calibration_range_are_clipped(vectors: np.ndarray) -> None:
    ranges = calibration_ranges(vectors[:8])
    far = vectors[8:] * 3
    assert np.array(encode(far, "uint8", ranges)).min() >= 0
    assert np.array(encode(far, "int8", ranges)).max() <= 127


def test_float_and_base64_keep_every_bit(vectors: np.ndarray) -> None:
    assert np.array_equal(np.array(encode(vectors, "float"), dtype=np.float32), vectors)
    decoded = np.frombuffer(base64.b64decode(encode(vectors, "base64")[3]), dtype="<f4")
    assert np.array_equal(decoded, vectors[3])


def test_binary_needs_no_ranges_and_calibrated_types_do(vectors: np.ndarray) -> None:
    with pytest.raises(ValueError, match="int8 needs calibration ranges"):
        encode(vectors, "int8")
    with pytest.raises(ValueError, match="unknown output type"):
        encode(vectors, "fp8")  # type: ignore[arg-type]


def test_hamming_ranking_of_binary_minilm_vectors_keeps_most_cosine_neighbours(reference_model) -> None:  # type: ignore[no-untyped-def]
    from embedserve.models.texts import SENTENCES

    corpus = [f"{a} {b}" for a in SENTENCES for b in SENTENCES[:12]]  # 444 real, varied passages
    floats = reference_model.encode(corpus, normalize_embeddings=True, batch_size=16)
    bits = np.unpackbits(np.array(encode(floats, "ubinary"), dtype=np.uint8), axis=1)
    recalls = []
    for query in range(0, len(corpus), 20):
        by_cosine = set(np.argsort(-(floats @ floats[query]))[1:11])
        by_hamming = set(np.argsort((bits != bits[query]).sum(axis=1), kind="stable")[1:11])
        recalls.append(len(by_cosine & by_hamming) / 10)
    # Measured on all-MiniLM-L6-v2 (384 dims, 48 bytes): recall@10 of Hamming against cosine.
    assert np.mean(recalls) >= 0.75, np.mean(recalls)  # measured 0.84 (README, "Compact embeddings")
