"""What an upstream model is: a `kind: upstream` entry of the models file."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Protocol = Literal["openai", "tei", "infinity", "ollama"]
Capability = Literal["embed", "rerank", "chat", "completions", "images"]
Balance = Literal["round_robin", "weighted", "least_outstanding"]

GENERATION: tuple[Capability, ...] = ("chat", "completions", "images")
# What each protocol can do; generation is relayed only through OpenAI's own routes.
PROTOCOL_CAPABILITIES: dict[str, frozenset[str]] = {
    "openai": frozenset({"embed", "rerank", *GENERATION}),
    "tei": frozenset({"embed", "rerank"}),
    "infinity": frozenset({"embed", "rerank"}),
    "ollama": frozenset({"embed", *GENERATION}),  # Ollama also serves OpenAI's routes under /v1
}


class EndpointSpec(BaseModel):
    """One base URL of an upstream, with its share of the traffic under `weighted` balancing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    weight: int = Field(1, ge=1, le=1000)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r} is not an http(s) base URL")
        return url.rstrip("/")


class HealthCheckSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: float = Field(10.0, ge=0, description="Seconds between active checks of each endpoint; 0: none.")
    timeout: float = Field(2.0, gt=0)
    path: str | None = Field(None, description="Path to GET; default: the protocol's own health route.")


class UpstreamSpec(BaseModel):
    """A model served by remote servers. Requests that name it (or an alias) are relayed there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    kind: Literal["upstream"] = "upstream"
    aliases: tuple[str, ...] = ()
    protocol: Protocol
    serves: tuple[Capability, ...] = Field(("embed",), min_length=1, description="What clients may ask of it.")
    endpoints: tuple[EndpointSpec, ...] = Field(min_length=1)
    upstream_model: str | None = Field(None, description="The upstream's own name of the model; default: `id`.")
    api_key_env: str | None = Field(None, description="Environment variable holding the upstream's API key.")
    timeout: float = Field(30.0, gt=0, description="Seconds per upstream call.")
    retries: int = Field(2, ge=0, le=10, description="Further attempts, on other endpoints, after a failed call.")
    balance: Balance = "round_robin"
    eject_after: int = Field(3, ge=1, description="Consecutive failures that take an endpoint out of rotation.")
    eject_seconds: float = Field(
        30.0, gt=0, description="Without active health checks, how long an ejected endpoint rests before a retry."
    )
    health_check: HealthCheckSpec = HealthCheckSpec()
    max_connections: int = Field(100, ge=1, description="Pooled connections per upstream.")

    @field_validator("endpoints", mode="before")
    @classmethod
    def _plain_urls(cls, value: object) -> object:
        """`endpoints: [http://a:8080, {url: http://b:8080, weight: 3}]`."""
        if isinstance(value, list | tuple):
            return [{"url": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> UpstreamSpec:
        unsupported = set(self.serves) - PROTOCOL_CAPABILITIES[self.protocol]
        if unsupported:
            raise ValueError(f"protocol {self.protocol!r} cannot serve {sorted(unsupported)}")
        urls = [e.url for e in self.endpoints]
        if len(set(urls)) != len(urls):
            raise ValueError("an endpoint URL is listed twice")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)

    @property
    def remote_name(self) -> str:
        return self.upstream_model or self.id
