"""Upstream entries in the models file."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedserve.server.config.errors import ConfigError
from embedserve.server.config.models_file import ModelEntry, load_models_file
from embedserve.server.serving.upstream.config import UpstreamSpec


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


def test_local_and_upstream_entries_live_in_one_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
models:
  - id: minilm
    source: /models/minilm
  - id: bge-m3
    kind: upstream
    protocol: tei
    serves: [embed]
    endpoints: [http://tei-a:8080, {url: "http://tei-b:8080/", weight: 3}]
    upstream_model: BAAI/bge-m3
    api_key_env: TEI_KEY
    balance: weighted
    health_check: {interval: 5}
""",
    )
    local, upstream = load_models_file(path)
    assert isinstance(local, ModelEntry) and isinstance(upstream, UpstreamSpec)
    assert [(e.url, e.weight) for e in upstream.endpoints] == [("http://tei-a:8080", 1), ("http://tei-b:8080", 3)]
    assert upstream.remote_name == "BAAI/bge-m3"
    assert upstream.timeout == 30 and upstream.retries == 2 and upstream.health_check.interval == 5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("protocol: tei\n    serves: [chat]", "cannot serve"),
        ("protocol: ollama\n    serves: [rerank]", "cannot serve"),
        ("protocol: grpc", "protocol"),
        ("protocol: openai\n    endpoints: [ftp://x]", "http"),
        ("protocol: openai\n    endpoints: [http://a, http://a/]", "twice"),
        ("protocol: openai\n    endpoints: []", "endpoints"),
        ("protocol: openai\n    timeout: 0", "timeout"),
        ("protocol: openai\n    source: /models/x", "source"),
    ],
)
def test_bad_upstream_entries_are_refused_with_a_reason(tmp_path: Path, extra: str, message: str) -> None:
    endpoints = "" if "endpoints" in extra else "\n    endpoints: [http://a:1]"
    path = write(tmp_path, f"models:\n  - id: x\n    kind: upstream\n    {extra}{endpoints}\n")
    with pytest.raises(ConfigError, match=message):
        load_models_file(path)
