"""The in-process ceilings: the ONNX one encodes what the default engine serves (its fp32 export, our runner), in
the original order whatever the length-sorted batches, as SentenceTransformer.encode does for the torch one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.ceiling import OnnxEncoder
from tests.support import cosine_rows


def test_the_onnx_ceiling_encodes_as_sentence_transformers_in_input_order(tiny_bert_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["short", "a much longer sentence about libraries " * 8, "medium length text here", "x"]
    got = OnnxEncoder(str(tiny_bert_dir), threads=1).encode(texts, batch_size=2)
    want = SentenceTransformer(str(tiny_bert_dir), device="cpu").encode(texts)
    assert got.shape == want.shape and cosine_rows(got, want).min() >= 0.99999
    one = OnnxEncoder(str(tiny_bert_dir), threads=1).encode(texts[1])
    np.testing.assert_allclose(one, got[1], atol=1e-6)
