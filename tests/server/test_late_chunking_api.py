"""Jina's `late_chunking` on /v1/embeddings, through the openai client as a user sends it (`extra_body`): the inputs
are one document's chunks, and each chunk's vector is the mean of its own tokens' vectors in the whole document
(the reference: /embed_all's token embeddings of the joined text), normalized as the model normalizes."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from openai import BadRequestError, OpenAI

from tests.inprocess import AppServer, start_app

CHUNKS = [
    "Berlin is the capital of Germany.",
    "It has about 3.8 million inhabitants,",
    "and the city is known for its museums and parks.",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_bge_m3_dir: Path) -> Iterator[AppServer]:
    running = start_app(tmp_path_factory.mktemp("late-chunking"), "--model", f"bge-m3={tiny_bge_m3_dir}")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: AppServer) -> OpenAI:
    return OpenAI(api_key="unused", base_url=f"{server.url}/v1", http_client=server.http, max_retries=0)


def reference(server: AppServer) -> np.ndarray:
    """From the served token embeddings of the joined text: each chunk's own tokens (counted alone, which for
    this tokenizer are its tokens in context too) after the leading <s>, averaged, then L2-normalized."""
    tokens = server.http.post("/embed_all", json={"inputs": " ".join(CHUNKS)}).json()[0]
    counts = [
        len(t) for t in server.http.post("/tokenize", json={"inputs": CHUNKS, "add_special_tokens": False}).json()
    ]
    hidden = np.array(tokens)
    assert len(hidden) == sum(counts) + 2  # <s> ... </s>
    edges = np.cumsum([1, *counts])
    means = np.stack([hidden[a:b].mean(axis=0) for a, b in zip(edges[:-1], edges[1:])])
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def test_each_chunk_is_pooled_over_its_own_tokens_in_the_whole_document(server: AppServer, client: OpenAI) -> None:
    response = client.embeddings.create(model="bge-m3", input=CHUNKS, extra_body={"late_chunking": True})
    got = np.array([d.embedding for d in response.data])
    np.testing.assert_allclose(got, reference(server), atol=1e-5)
    assert response.usage.prompt_tokens == len(
        server.http.post("/embed_all", json={"inputs": " ".join(CHUNKS)}).json()[0]
    )
    alone = np.array([d.embedding for d in client.embeddings.create(model="bge-m3", input=CHUNKS).data])
    assert not np.allclose(got, alone, atol=1e-3)  # without it, each chunk is embedded without its context


def test_dimensions_and_base64_apply_to_chunks_as_to_texts(client: OpenAI) -> None:
    full = client.embeddings.create(model="bge-m3", input=CHUNKS, extra_body={"late_chunking": True})
    cut = client.embeddings.create(model="bge-m3", input=CHUNKS, dimensions=8, extra_body={"late_chunking": True})
    want = np.array([d.embedding[:8] for d in full.data])
    np.testing.assert_allclose(
        np.array([d.embedding for d in cut.data]), want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6
    )
    packed = client.embeddings.create(
        model="bge-m3", input=CHUNKS, encoding_format="base64", extra_body={"late_chunking": True}
    )
    rows = [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in packed.data]
    np.testing.assert_allclose(rows, [d.embedding for d in full.data], atol=1e-7)


def test_past_the_models_limit_or_token_ids_are_400s_in_openais_shape(server: AppServer, client: OpenAI) -> None:
    long = ["a long sentence about libraries " * 40] * 3  # ~600 tokens: past the tiny model's 512
    with pytest.raises(BadRequestError) as refused:
        client.embeddings.create(model="bge-m3", input=long, extra_body={"late_chunking": True})
    assert "limit of 512 tokens" in refused.value.body["message"] and refused.value.body["param"] == "input"
    ids = server.http.post("/v1/embeddings", json={"model": "bge-m3", "input": [[5, 6], [7]], "late_chunking": True})
    assert ids.status_code == 400 and "token ids" in ids.json()["error"]["message"]
    served = client.embeddings.create(model="bge-m3", input=CHUNKS, extra_body={"late_chunking": True})
    assert len(served.data) == 3  # the server serves on
