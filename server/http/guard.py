"""Authentication and request-rate limits, before a request reaches a route (pure ASGI).

It also gives the request's call (server.http.calls) its caller and token admission check: embedding work
is limited in input tokens per minute, which are known only once the request is tokenized.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Awaitable, Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve.server.http import calls
from embedserve.server.http.auth import Authenticator, AuthError, Caller
from embedserve.server.http.errors import ApiError, send_error
from embedserve.server.http.ratelimit import BucketStore, Decision
from embedserve.server.telemetry.metrics import Metrics

log = logging.getLogger("embedserve.guard")


class Limits:
    """Server-wide limits; 0 turns one off."""

    def __init__(
        self,
        *,
        requests_per_second: float = 0,
        burst: int = 0,
        tokens_per_minute: int = 0,
        global_requests_per_second: float = 0,
        global_burst: int = 0,
        max_tokens_per_request: int = 0,
    ) -> None:
        self.requests_per_second = requests_per_second
        self.burst = burst or max(1, int(requests_per_second))
        self.tokens_per_minute = tokens_per_minute
        self.global_requests_per_second = global_requests_per_second
        self.global_burst = global_burst or max(1, int(global_requests_per_second))
        self.max_tokens_per_request = max_tokens_per_request


class TokenAdmission:
    """Embedding work's input-token limits for a caller (per request, per minute): the guard gives each request's
    call this check, and a Batch API line runs under its job owner's (server.batches)."""

    def __init__(self, store: BucketStore, limits: Limits, metrics: Metrics) -> None:
        self.store, self.limits, self.metrics = store, limits, metrics

    def admission(self, caller: Caller) -> Callable[[int], Awaitable[None]]:
        own = caller.limits
        per_minute = (own.tokens_per_minute if own else None) or self.limits.tokens_per_minute
        most = self.limits.max_tokens_per_request

        async def admit(tokens: int) -> None:
            if most and tokens > most:
                raise ApiError(
                    413,
                    f"the request has {tokens} input tokens; the limit is {most} per request",
                    code="too_many_tokens",
                )
            if per_minute <= 0:
                return
            decision = await self.store.hit(f"tokens:{caller.identity}", per_minute / 60, per_minute, tokens)
            if not decision.allowed:
                self.metrics.rejections.labels("", "rate").inc()
                if tokens > per_minute:
                    raise ApiError(
                        413,
                        f"the request has {tokens} input tokens, more than the limit of {per_minute} tokens per minute",
                        code="too_many_tokens",
                    )
                raise _rate_limited(decision, "input tokens per minute")

        return admit


class GuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        public_paths: Sequence[str],
        store: BucketStore,
        limits: Limits,
        metrics: Metrics,
        tokens: TokenAdmission | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.tokens = tokens or TokenAdmission(store, limits, metrics)
        self.public_paths = tuple(public_paths)
        # One regex for all patterns: fnmatch per pattern per request was a tenth of the event loop's time.
        self._public = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.public_paths) or "(?!)")
        self.store = store
        self.limits = limits
        self.metrics = metrics

    def _is_public(self, path: str) -> bool:
        return self._public.match(path) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = {name: value for name, value in scope["headers"] if name in (b"authorization", b"x-api-key")}
        client = (scope.get("client") or ("unknown", 0))[0]
        if self.authenticator.enabled:
            try:
                caller = self.authenticator.authenticate(
                    _text(headers.get(b"authorization")), _text(headers.get(b"x-api-key"))
                )
            except AuthError as exc:
                self.metrics.rejections.labels("", "auth").inc()
                challenge = f'Bearer realm="embedserve", error="invalid_token", error_description={quoted(str(exc))}'
                await send_error(
                    send, path, ApiError(401, str(exc), code="invalid_api_key", headers={"WWW-Authenticate": challenge})
                )
                return
        else:
            caller = Caller(f"ip:{client}")

        call = calls.current()
        call.caller = caller.identity
        decision = await self._admit_request(caller)
        if decision is not None and not decision.allowed:
            self.metrics.rejections.labels("", "rate").inc()
            await send_error(send, path, _rate_limited(decision, "requests"))
            return
        call.admit = self.tokens.admission(caller)
        if decision is None:
            await self.app(scope, receive, send)
            return
        extra = _rate_headers(decision)

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_limits)

    async def _admit_request(self, caller: Caller) -> Decision | None:
        """The global bucket, then the caller's; the caller's decision (for headers), or None if unlimited."""
        limits = self.limits
        if limits.global_requests_per_second > 0:
            overall = await self.store.hit("global:requests", limits.global_requests_per_second, limits.global_burst, 1)
            if not overall.allowed:
                return overall
        own = caller.limits
        rate = (own.requests_per_second if own else None) or limits.requests_per_second
        if rate <= 0:
            return None
        burst = (own.burst if own else None) or (limits.burst if limits.requests_per_second else max(1, int(rate)))
        return await self.store.hit(f"requests:{caller.identity}", rate, burst, 1)


def quoted(text: str) -> str:
    """An HTTP quoted-string (RFC 9110 5.6.4): quotes and backslashes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _rate_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit", str(decision.limit).encode()),
        (b"x-ratelimit-remaining", str(decision.remaining).encode()),
        (b"x-ratelimit-reset", str(max(0, round(decision.reset_seconds))).encode()),
    ]


def _rate_limited(decision: Decision, what: str) -> ApiError:
    retry = max(1, round(decision.retry_after + 0.49))
    headers = {"Retry-After": str(retry), **{k.decode(): v.decode() for k, v in _rate_headers(decision)}}
    return ApiError(429, f"rate limit exceeded ({what}); retry in {retry} s", code="rate_limited", headers=headers)
