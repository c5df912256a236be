"""Calls to one upstream model's endpoints: pooled connections, balancing, retries within the deadline,
passive ejection on failures and active health checks that re-admit."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import numpy as np
import orjson

from embedserve.models.errors import InvalidInput
from embedserve.models.pooling import l2_normalize
from embedserve.models.types import (
    Embeddings,
    MultiVectors,
    Predictions,
    Scores,
    SparseEmbeddings,
    TokenEmbeddings,
    TokenSpan,
)
from embedserve.server.serving.seam import Call, ClassifyParams, EmbedParams, Inputs, RerankParams, TextOrPair
from embedserve.server.serving.upstream.balancer import Balancer, Endpoint
from embedserve.server.serving.upstream.config import EndpointSpec, UpstreamSpec
from embedserve.server.serving.upstream.protocols import PROTOCOLS, Answer, BadAnswer, Unsupported
from embedserve.server.telemetry import tracing
from embedserve.server.telemetry.metrics import Metrics

log = logging.getLogger("embedserve.upstream")
T = TypeVar("T")

# Upstream answers relayed with their own status: the client's request was at fault, not the upstream.
_CLIENT_FAULTS = frozenset({400, 413, 422})


class UpstreamError(Exception):
    """A call that failed for good: after retries (502/504), or refused for the client's input (4xx)."""

    def __init__(self, status: int, model: str, message: str, *, code: str = "upstream_error") -> None:
        super().__init__(f"upstream {model!r}: {message}")
        self.status = status
        self.code = code


@dataclass(slots=True)
class Relay:
    """An open upstream answer whose body is relayed as it arrives; `close` must be called once."""

    response: httpx.Response
    close: Callable[[], Any]


class UpstreamModel:
    def __init__(self, spec: UpstreamSpec, metrics: Metrics) -> None:
        self.spec = spec
        self.protocol = PROTOCOLS[spec.protocol]
        self.metrics = metrics
        checks = spec.health_check.interval > 0
        self.balancer = Balancer(
            spec.endpoints,
            spec.balance,
            eject_after=spec.eject_after,
            readmit_after=None if checks else spec.eject_seconds,
            on_change=self._on_health_change,
        )
        for endpoint in self.balancer.endpoints:
            self._on_health_change(endpoint)
        key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        if spec.api_key_env and not key:
            log.warning("upstream API key variable is not set", extra={"model": spec.id, "variable": spec.api_key_env})
        self._headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {key}"} if key else {})
        self._client: httpx.AsyncClient | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._first_checks: set[asyncio.Task[bool]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        limits = httpx.Limits(
            max_connections=self.spec.max_connections, max_keepalive_connections=self.spec.max_connections
        )
        self._client = httpx.AsyncClient(limits=limits, timeout=self.spec.timeout, follow_redirects=False)
        if self.spec.health_check.interval > 0:
            self._health_task = asyncio.create_task(self._check_health_forever(), name=f"health-{self.spec.id}")

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    @property
    def client(self) -> httpx.AsyncClient:
        assert self._client is not None, "the upstream is not started"
        return self._client

    @property
    def available(self) -> bool:
        return any(e.healthy for e in self.balancer.endpoints)

    # -- the serving seam (server.serving.seam.ServedModel) ------------------------------------------

    @property
    def prompts(self) -> dict[str, str]:
        return {}  # the upstream applies its own, by the prompt_name it is sent

    @property
    def outputs(self) -> list[str]:
        return []

    @property
    def dimension(self) -> int | None:
        return None

    async def embed(self, inputs: Inputs, options: EmbedParams, call: Call) -> Embeddings:
        try:
            body = self.protocol.embed_body(inputs, self.spec.remote_name, options)
        except Unsupported as exc:
            raise UpstreamError(400, self.spec.id, str(exc), code="unsupported_by_upstream") from None
        estimate = estimate_tokens(inputs)
        rows, tokens = await self._answer(
            self.protocol.embed_url,
            body,
            lambda payload: self.protocol.read_embeddings(payload, len(inputs)),
            call,
            estimate,
        )
        return Embeddings(fit(rows, options.dimensions, options.normalize), tokens)

    async def embed_sparse(self, texts: Sequence[str], options: EmbedParams, call: Call) -> SparseEmbeddings:
        raise InvalidInput(
            f"model {self.spec.id!r} is served upstream, which gives no sparse embeddings", param="model"
        )

    async def rerank(self, query: str, documents: Sequence[str], options: RerankParams, call: Call) -> Scores:
        if not documents:
            return Scores(np.zeros(0, dtype=np.float32), 0)
        if options.instruction is not None:
            raise InvalidInput(
                f"model {self.spec.id!r} is served upstream, whose rerank APIs take no instruction",
                param="instruction",
            )
        try:
            url = self.protocol.rerank_url
            body = self.protocol.rerank_body(
                query, documents, self.spec.remote_name, raw_scores=options.raw_scores, truncate=options.truncate
            )
        except Unsupported as exc:
            raise UpstreamError(400, self.spec.id, str(exc), code="unsupported_by_upstream") from None
        estimate = estimate_tokens([query] * len(documents)) + estimate_tokens(documents)  # a query per pair
        scores, tokens = await self._answer(
            url, body, lambda payload: self.protocol.read_scores(payload, len(documents)), call, estimate
        )
        return Scores(scores, tokens)

    async def calibration(self, dimensions: int | None) -> np.ndarray:
        raise InvalidInput("int8 and uint8 are calibrated on models served here, not upstream", param="embedding_type")

    def _not_here(self, what: str) -> InvalidInput:
        return InvalidInput(
            f"model {self.spec.id!r} is served upstream: {what} needs a model served here", param="model"
        )

    async def embed_tokens(self, texts: Sequence[str], options: EmbedParams, call: Call) -> TokenEmbeddings:
        raise self._not_here("token embeddings")

    async def embed_multivector(self, texts: Sequence[str], options: EmbedParams, call: Call) -> MultiVectors:
        raise self._not_here("multi-vector embeddings")

    async def embed_late_chunks(self, chunks: Sequence[str], options: EmbedParams, call: Call) -> Embeddings:
        raise self._not_here("late chunking")

    async def classify(self, inputs: Sequence[TextOrPair], options: ClassifyParams, call: Call) -> Predictions:
        raise self._not_here("classification")

    async def describe(
        self, texts: Sequence[str], *, add_special_tokens: bool, prompt_name: str | None
    ) -> list[list[TokenSpan]]:
        raise self._not_here("tokenizing")

    async def decode(self, sequences: Sequence[Sequence[int]], *, skip_special_tokens: bool) -> list[str]:
        raise self._not_here("decoding")

    async def _answer(
        self,
        url_of: Callable[[str], str],
        body: dict[str, Any],
        read: Callable[[Any], Answer],
        call: Call,
        estimate: int,
    ) -> tuple[np.ndarray, int]:
        """One call under the request's token admission (by `estimate`, before it is sent) and deadline;
        the answer with the input tokens to report: the upstream's count, or the estimate."""
        if call.admit is not None:
            await call.admit(estimate)
        within = call.within if call.within is not None else self.spec.timeout
        values, tokens = await self._call(url_of, body, read, asyncio.get_running_loop().time() + within)
        tokens = tokens if tokens is not None else estimate
        self.metrics.tokens.labels(self.spec.id).inc(tokens)
        return values, tokens

    async def _call(
        self, url_of: Callable[[str], str], body: dict[str, Any], read: Callable[[Any], T], deadline: float
    ) -> T:
        """Idempotent calls: a failure or timeout is retried on another endpoint while the deadline allows."""
        content = orjson.dumps(body)
        failure = self._no_endpoint()
        for endpoint, remaining in self._attempts(deadline):
            outcome, result = await self._attempt(
                endpoint, url_of(endpoint.url), content, read, min(remaining, self.spec.timeout)
            )
            if outcome == "ok":
                return result
            failure = result
            if outcome == "rejected":
                raise failure
        raise failure

    async def _attempt(
        self, endpoint: Endpoint, url: str, content: bytes, read: Callable[[Any], T], timeout: float
    ) -> tuple[str, Any]:
        """One call: ("ok", value), ("rejected", error) for the client's fault, or (failure kind, error)."""
        name = self.spec.id
        started = time.perf_counter()
        self._begin(endpoint)
        try:
            with tracing.client_span(f"upstream {self.spec.protocol}", url) as traced:
                response = await self.client.post(
                    url,
                    content=content,
                    headers={**self._headers, **traced},
                    timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
                )
        except httpx.TimeoutException:
            return self._failed(
                endpoint,
                "timeout",
                UpstreamError(
                    504, name, f"{endpoint.url} did not answer within {timeout:g} s", code="upstream_timeout"
                ),
            )
        except httpx.TransportError as exc:
            return self._failed(
                endpoint, "unreachable", UpstreamError(502, name, f"cannot reach {endpoint.url}: {exc!r}")
            )
        finally:
            self._end(endpoint, started)
        status = response.status_code
        if status >= 400:
            detail = f"{endpoint.url} answered {status}: {_detail(response)}"
            if status in _CLIENT_FAULTS:
                self._count(endpoint, "rejected")
                self.balancer.succeeded(endpoint)  # it is up and judging requests
                return "rejected", UpstreamError(status, name, detail, code="rejected_by_upstream")
            if status == 429 or status < 500:  # busy or misconfigured (401/403/404), not down: try elsewhere
                self._count(endpoint, "error")
                return "error", UpstreamError(502, name, detail)
            return self._failed(endpoint, "error", UpstreamError(502, name, detail))
        try:
            value = read(orjson.loads(response.content))
        except (orjson.JSONDecodeError, BadAnswer) as exc:
            return self._failed(
                endpoint, "invalid", UpstreamError(502, name, f"{endpoint.url} answered in an unexpected shape: {exc}")
            )
        self._count(endpoint, "ok")
        self.balancer.succeeded(endpoint)
        return "ok", value

    def _attempts(self, deadline: float) -> Iterator[tuple[Endpoint, float]]:
        """The endpoint for each attempt (the first, then one per retry, each not yet tried while any is
        left) with the seconds left until the deadline; stops when the retries or the time run out."""
        loop = asyncio.get_running_loop()
        tried: list[str] = []
        for _ in range(1 + self.spec.retries):
            remaining = deadline - loop.time()
            endpoint = self.balancer.pick(tried) or self.balancer.pick()
            if remaining <= 0 or endpoint is None:
                return
            tried.append(endpoint.url)
            yield endpoint, remaining

    def _no_endpoint(self) -> UpstreamError:
        return UpstreamError(503, self.spec.id, "no endpoint is configured", code="upstream_unavailable")

    # -- generation, relayed unchanged -----------------------------------------------------

    async def relay(self, capability: str, content: bytes, headers: dict[str, str], deadline: float) -> Relay:
        """Opens the upstream's answer to a generation request, for streaming back as it arrives.

        Generation is not idempotent: only a call that never reached an endpoint (connect failure) is
        retried on another; once sent, the upstream's answer, error or not, is the answer."""
        failure = self._no_endpoint()
        for endpoint, remaining in self._attempts(deadline):
            request = self.client.build_request(
                "POST",
                self.protocol.generation_url(endpoint.url, capability),
                content=content,
                headers={**headers, **self._headers},
                timeout=httpx.Timeout(self.spec.timeout, connect=min(remaining, 5.0)),
            )
            started = time.perf_counter()
            self._begin(endpoint)
            try:
                async with asyncio.timeout(remaining):
                    response = await self.client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                self._end(endpoint, started)
                _, failure = self._failed(
                    endpoint, "unreachable", UpstreamError(502, self.spec.id, f"cannot reach {endpoint.url}: {exc!r}")
                )
                continue
            except (httpx.TimeoutException, TimeoutError):
                self._end(endpoint, started)
                raise self._failed(
                    endpoint,
                    "timeout",
                    UpstreamError(504, self.spec.id, f"{endpoint.url} did not answer in time", code="upstream_timeout"),
                )[1] from None
            except httpx.TransportError as exc:
                self._end(endpoint, started)
                raise self._failed(
                    endpoint, "error", UpstreamError(502, self.spec.id, f"{endpoint.url} failed: {exc!r}")
                )[1] from None
            self.metrics.upstream_seconds.labels(self.spec.id, endpoint.url).observe(time.perf_counter() - started)
            if response.status_code >= 500:
                self._failed(endpoint, "error", None)
            else:
                self._count(endpoint, "ok" if response.status_code < 400 else "rejected")
                self.balancer.succeeded(endpoint)
            return Relay(response, self._closer(endpoint, response))
        raise failure

    def _closer(self, endpoint: Endpoint, response: httpx.Response) -> Callable[[], Any]:
        done = False

        async def close() -> None:
            nonlocal done
            if not done:
                done = True
                self._end(endpoint, None)
                await response.aclose()

        return close

    # -- health ----------------------------------------------------------------------------

    async def _check_health_forever(self) -> None:
        while True:
            await asyncio.gather(*(self.check_health(e) for e in list(self.balancer.endpoints)))
            await asyncio.sleep(self.spec.health_check.interval)

    async def check_health(self, endpoint: Endpoint) -> bool:
        check = self.spec.health_check
        url = self.protocol.health_url(endpoint.url, check.path)
        try:
            response = await self.client.get(url, headers=self._headers, timeout=check.timeout)
            ok = response.status_code < 400
        except httpx.HTTPError:
            ok = False
        if ok:
            self.balancer.succeeded(endpoint)
        else:
            self.balancer.failed(endpoint)
        return ok

    # -- bookkeeping -----------------------------------------------------------------------

    def _begin(self, endpoint: Endpoint) -> None:
        endpoint.outstanding += 1
        self.metrics.upstream_outstanding.labels(self.spec.id, endpoint.url).inc()

    def _end(self, endpoint: Endpoint, started: float | None) -> None:
        endpoint.outstanding -= 1
        self.metrics.upstream_outstanding.labels(self.spec.id, endpoint.url).dec()
        if started is not None:
            self.metrics.upstream_seconds.labels(self.spec.id, endpoint.url).observe(time.perf_counter() - started)

    def _count(self, endpoint: Endpoint, outcome: str) -> None:
        self.metrics.upstream_calls.labels(self.spec.id, endpoint.url, outcome).inc()

    def _failed(self, endpoint: Endpoint, outcome: str, error: UpstreamError | None) -> tuple[str, Any]:
        self._count(endpoint, outcome)
        self.balancer.failed(endpoint)
        log.warning("upstream call failed", extra={"model": self.spec.id, "endpoint": endpoint.url, "outcome": outcome})
        return outcome, error

    def _on_health_change(self, endpoint: Endpoint) -> None:
        self.metrics.upstream_healthy.labels(self.spec.id, endpoint.url).set(1 if endpoint.healthy else 0)
        if not endpoint.healthy:
            self.metrics.upstream_ejections.labels(self.spec.id, endpoint.url).inc()
            log.warning("upstream endpoint ejected", extra={"model": self.spec.id, "endpoint": endpoint.url})
        elif endpoint.ejections:
            log.info("upstream endpoint re-admitted", extra={"model": self.spec.id, "endpoint": endpoint.url})

    # -- run-time changes (the admin API) -------------------------------------------------

    def add_endpoint(self, spec: EndpointSpec) -> Endpoint:
        """Puts an endpoint in rotation; with active checks, its first one starts now, so one that is down
        is on its way out at once. ValueError if it is listed already."""
        endpoint = self.balancer.add(spec)
        self._on_health_change(endpoint)
        if self.spec.health_check.interval > 0:
            check = asyncio.create_task(self.check_health(endpoint))
            self._first_checks.add(check)  # held, so the task is not collected mid-flight
            check.add_done_callback(self._first_checks.discard)
        return endpoint

    def remove_endpoint(self, url: str) -> None:
        """Takes an endpoint out, with its metric series. KeyError if it is not listed."""
        endpoint = self.balancer.remove(url)
        for gauge in (self.metrics.upstream_healthy, self.metrics.upstream_outstanding):
            try:
                gauge.remove(self.spec.id, endpoint.url)
            except KeyError:
                pass


def estimate_tokens(texts: Inputs) -> int:
    """Input tokens of an upstream request, for limits before it is sent: token ids as given, text at
    ~4 characters a token (the upstream's own count, when it reports one, is what usage shows)."""
    return sum(len(t) if not isinstance(t, str) else len(t) // 4 + 1 for t in texts)


def fit(rows: np.ndarray, dimensions: int | None, normalize: bool | None) -> np.ndarray:
    """What the request asked of the vectors, where the upstream did not do it: cut to `dimensions` (then
    L2-normalize, as OpenAI's shortened embeddings are), or normalize on request."""
    if dimensions is not None and rows.shape[1] > dimensions:
        rows = rows[:, :dimensions]
        normalize = True if normalize is None else normalize
    return l2_normalize(rows) if normalize else np.ascontiguousarray(rows, dtype=np.float32)


def _detail(response: httpx.Response) -> str:
    """The upstream's own error message, whatever its shape, kept short."""
    try:
        payload = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:300] or response.reason_phrase
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload.get("message", payload)))
        if isinstance(error, dict):
            error = error.get("message", error)
        return str(error)[:300]
    return str(payload)[:300]
