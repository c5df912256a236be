"""Each upstream's wire shapes: where to send a request, what to send, and how to read the answer.

Pure functions of data (no I/O), so every shape is testable without a server:
- openai: `/v1/embeddings` (OpenAI), `/v1/rerank` (Cohere/Jina, as vLLM, Infinity and embedserve answer),
  and the generation routes. The endpoint is a base URL as OpenAI clients take it (`https://api.x.com/v1`);
  a bare `http://host:port` gets `/v1`.
- infinity: the same bodies at the server's root (`/embeddings`, `/rerank`), `/health`.
- tei: `/embed` (a list of vectors, no usage) and `/rerank` (`[{index, score}]`), `/health`.
- ollama: `/api/embed` (`{"embeddings": [...], "prompt_eval_count"}`), `/api/version`; its OpenAI routes under /v1.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from embedserve.server.serving.seam import EmbedParams, Inputs

GENERATION_PATHS = {"chat": "/chat/completions", "completions": "/completions", "images": "/images/generations"}


class BadAnswer(ValueError):
    """The upstream answered 2xx in a shape we cannot read."""


class Unsupported(ValueError):
    """The request asks for something this protocol cannot carry (e.g. token ids to TEI)."""


Answer = tuple[np.ndarray, int | None]
"""What an upstream's answer says: vectors (one row per input) or scores (one per document, in the
documents' order), and the input tokens as the upstream counted them (None when it does not say)."""


def _texts_only(inputs: Inputs, protocol: str) -> list[str]:
    if any(not isinstance(item, str) for item in inputs):
        raise Unsupported(f"the {protocol} upstream takes text only, not token ids")
    return list(inputs)  # type: ignore[arg-type]


def _usage(payload: dict[str, Any]) -> int | None:
    usage = payload.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        return usage["prompt_tokens"]
    return None


def _matrix(rows: list[Any], count: int) -> np.ndarray:
    if len(rows) != count:
        raise BadAnswer(f"{len(rows)} vectors for {count} inputs")
    try:
        matrix = np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise BadAnswer(f"vectors are not numbers: {exc}") from None
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise BadAnswer("vectors are not a list of equal-length lists of numbers")
    return matrix


def _scores_by_index(results: Any, count: int, score_key: str) -> np.ndarray:
    if not isinstance(results, list):
        raise BadAnswer("rerank results are not a list")
    scores = np.full(count, np.nan, dtype=np.float32)
    for item in results:
        try:
            scores[int(item["index"])] = float(item[score_key])
        except (KeyError, TypeError, ValueError, IndexError):
            raise BadAnswer(f"a rerank result is not {{index, {score_key}}} for one of {count} documents") from None
    if np.isnan(scores).any():
        raise BadAnswer("the upstream did not score every document")
    return scores


class Protocol:
    name = ""
    health_path = "/health"

    def base(self, url: str) -> str:
        return url

    def health_url(self, url: str, path: str | None = None) -> str:
        return url + path if path else self.base(url) + self.health_path

    # embeddings
    def embed_url(self, url: str) -> str:
        raise NotImplementedError

    def embed_body(self, inputs: Inputs, model: str, options: EmbedParams) -> dict[str, Any]:
        raise NotImplementedError

    def read_embeddings(self, payload: Any, count: int) -> Answer:
        raise NotImplementedError

    # reranking
    def rerank_url(self, url: str) -> str:
        raise Unsupported(f"the {self.name} protocol has no reranking")

    def rerank_body(
        self, query: str, documents: Sequence[str], model: str, *, raw_scores: bool, truncate: bool
    ) -> dict[str, Any]:
        raise NotImplementedError

    def read_scores(self, payload: Any, count: int) -> Answer:
        raise NotImplementedError

    # generation, relayed unchanged
    def generation_url(self, url: str, capability: str) -> str:
        raise Unsupported(f"the {self.name} protocol has no generation routes")


class OpenAIProtocol(Protocol):
    """OpenAI's embeddings and Cohere/Jina's rerank bodies under an OpenAI base URL."""

    name = "openai"
    health_path = "/models"

    def base(self, url: str) -> str:
        return url + "/v1" if urlsplit(url).path in ("", "/") else url

    def embed_url(self, url: str) -> str:
        return self.base(url) + "/embeddings"

    def embed_body(self, inputs: Inputs, model: str, options: EmbedParams) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "input": list(inputs), "encoding_format": "float"}
        if options.dimensions is not None:
            body["dimensions"] = options.dimensions
        # Extensions that embedserve, vLLM and others read; sent only when asked for (OpenAI refuses them).
        if options.prompt_name is not None:
            body["prompt_name"] = options.prompt_name
        if not options.truncate:
            body["truncate"] = False
        return body

    def read_embeddings(self, payload: Any, count: int) -> Answer:
        try:
            items = sorted(payload["data"], key=lambda item: item["index"])
            rows = [_vector(item["embedding"]) for item in items]
        except (KeyError, TypeError):
            raise BadAnswer("not an OpenAI embeddings list ({data: [{index, embedding}]})") from None
        return (_matrix(rows, count), _usage(payload))

    def rerank_url(self, url: str) -> str:
        return self.base(url) + "/rerank"

    def rerank_body(
        self, query: str, documents: Sequence[str], model: str, *, raw_scores: bool, truncate: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "query": query, "documents": list(documents), "return_documents": False}
        if raw_scores:
            body["raw_scores"] = True
        return body

    def read_scores(self, payload: Any, count: int) -> Answer:
        if not isinstance(payload, dict):
            raise BadAnswer("not a rerank answer ({results: [{index, relevance_score}]})")
        return (_scores_by_index(payload.get("results"), count, "relevance_score"), _usage(payload))

    def generation_url(self, url: str, capability: str) -> str:
        return self.base(url) + GENERATION_PATHS[capability]


class InfinityProtocol(OpenAIProtocol):
    """Infinity answers OpenAI's and Cohere's bodies at its root, with a /health route."""

    name = "infinity"
    health_path = "/health"

    def base(self, url: str) -> str:
        return url

    def embed_body(self, inputs: Inputs, model: str, options: EmbedParams) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "input": _texts_only(inputs, self.name), "encoding_format": "float"}
        if options.dimensions is not None:
            body["dimensions"] = options.dimensions  # Infinity's matryoshka_dim
        return body

    def generation_url(self, url: str, capability: str) -> str:
        raise Unsupported("the infinity protocol has no generation routes")


class TEIProtocol(Protocol):
    name = "tei"

    def embed_url(self, url: str) -> str:
        return url + "/embed"

    def embed_body(self, inputs: Inputs, model: str, options: EmbedParams) -> dict[str, Any]:
        body: dict[str, Any] = {"inputs": _texts_only(inputs, self.name), "truncate": options.truncate}
        if options.normalize is not None:
            body["normalize"] = options.normalize
        if options.dimensions is not None:
            body["dimensions"] = options.dimensions
        if options.prompt_name is not None:
            body["prompt_name"] = options.prompt_name
        return body

    def read_embeddings(self, payload: Any, count: int) -> Answer:
        if not isinstance(payload, list):
            raise BadAnswer("not TEI's /embed answer (a list of vectors)")
        return (_matrix(payload, count), None)

    def rerank_url(self, url: str) -> str:
        return url + "/rerank"

    def rerank_body(
        self, query: str, documents: Sequence[str], model: str, *, raw_scores: bool, truncate: bool
    ) -> dict[str, Any]:
        return {"query": query, "texts": list(documents), "raw_scores": raw_scores, "truncate": truncate}

    def read_scores(self, payload: Any, count: int) -> Answer:
        return (_scores_by_index(payload, count, "score"), None)


class OllamaProtocol(Protocol):
    name = "ollama"
    health_path = "/api/version"

    def embed_url(self, url: str) -> str:
        return url + "/api/embed"

    def embed_body(self, inputs: Inputs, model: str, options: EmbedParams) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "input": _texts_only(inputs, self.name), "truncate": options.truncate}
        if options.dimensions is not None:
            body["dimensions"] = options.dimensions
        return body

    def read_embeddings(self, payload: Any, count: int) -> Answer:
        if not isinstance(payload, dict) or not isinstance(payload.get("embeddings"), list):
            raise BadAnswer("not Ollama's /api/embed answer ({embeddings: [...]})")
        tokens = payload.get("prompt_eval_count")
        return (_matrix(payload["embeddings"], count), tokens if isinstance(tokens, int) else None)

    def generation_url(self, url: str, capability: str) -> str:
        return url + "/v1" + GENERATION_PATHS[capability]


def _vector(value: Any) -> Any:
    """An embedding as a list of floats, or base64 of little-endian float32 (encoding_format: base64)."""
    if isinstance(value, str):
        try:
            return np.frombuffer(base64.b64decode(value, validate=True), dtype="<f4")
        except ValueError:
            raise BadAnswer("an embedding is a string but not base64 float32") from None
    return value


PROTOCOLS: dict[str, Protocol] = {
    p.name: p for p in (OpenAIProtocol(), InfinityProtocol(), TEIProtocol(), OllamaProtocol())
}
