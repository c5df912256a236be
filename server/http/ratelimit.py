"""Token-bucket rate limits behind one interface, in process or shared through Redis.

A bucket holds up to `burst` units and refills at `rate` units per second; a hit takes `cost`
units or is refused with the seconds until it would fit. Requests are limited per caller and
globally in requests per second; embedding work per caller in input tokens per minute.
The Redis store keeps every replica on one budget (one Lua script per hit, Redis's own clock);
when Redis is unreachable, the limiter falls back to its in-process store, says so in the log
and a metric, and tries Redis again after a pause rather than failing requests.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("embedserve.ratelimit")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float
    """Seconds until the bucket is full again."""
    retry_after: float
    """Seconds until this hit would have been allowed (0 when allowed)."""


class BucketStore(Protocol):
    async def hit(self, key: str, rate: float, burst: float, cost: float) -> Decision: ...


def _decide(tokens: float, rate: float, burst: float, cost: float) -> tuple[bool, float, Decision]:
    """Takes `cost` from a bucket holding `tokens` (already refilled); the bucket's new level and the decision."""
    allowed = cost <= tokens
    left = tokens - cost if allowed else tokens
    retry = 0.0 if allowed else (cost - tokens) / rate
    decision = Decision(allowed, int(burst), max(0, math.floor(left)), (burst - left) / rate, retry)
    return allowed, left, decision


class MemoryStore:
    """Buckets in this process (one replica)."""

    def __init__(self, clock=time.monotonic, max_keys: int = 100_000) -> None:  # type: ignore[no-untyped-def]
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, rate: float, burst: float, cost: float) -> Decision:
        now = self._clock()
        tokens, updated = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - updated) * rate)
        _, left, decision = _decide(tokens, rate, burst, cost)
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            self._forget_full(now, rate)
        self._buckets[key] = (left, now)
        return decision

    def _forget_full(self, now: float, rate: float) -> None:
        """Drops buckets that have refilled (they hold nothing a new bucket would not), bounding memory."""
        stale = [k for k, (tokens, updated) in self._buckets.items() if now - updated > 3600]
        for k in stale or list(self._buckets)[: len(self._buckets) // 10]:
            del self._buckets[k]


# KEYS[1]: bucket; ARGV: rate, burst, cost. Returns {allowed, tokens left * 1000, now_ms}.
_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local allowed = 0
if cost <= tokens then tokens = tokens - cost; allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, math.floor(tokens * 1000)}
"""


class RedisStore:
    """Buckets in Redis, shared by every replica that points at the same server."""

    def __init__(self, url: str, *, prefix: str = "embedserve:rl:", timeout: float = 0.25) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._redis.register_script(_LUA)
        self._prefix = prefix

    async def hit(self, key: str, rate: float, burst: float, cost: float) -> Decision:
        allowed, left_milli = await self._script(keys=[self._prefix + key], args=[rate, burst, cost])
        left = int(left_milli) / 1000
        retry = 0.0 if allowed else (cost - left) / rate
        return Decision(bool(allowed), int(burst), max(0, math.floor(left)), (burst - left) / rate, retry)

    async def close(self) -> None:
        await self._redis.aclose()


class FallbackStore:
    """Redis while it answers, the in-process store while it does not."""

    def __init__(
        self, primary: RedisStore, fallback: MemoryStore, *, retry_seconds: float = 5.0, on_change=None
    ) -> None:  # type: ignore[no-untyped-def]
        self._primary, self._fallback = primary, fallback
        self._retry_seconds = retry_seconds
        self._down_until = 0.0
        self._on_change = on_change or (lambda degraded: None)
        self.degraded = False

    async def hit(self, key: str, rate: float, burst: float, cost: float) -> Decision:
        if time.monotonic() >= self._down_until:
            try:
                decision = await self._primary.hit(key, rate, burst, cost)
            except Exception as exc:  # connection refused, timeout, Redis errors: keep serving
                self._down_until = time.monotonic() + self._retry_seconds
                if not self.degraded:
                    log.warning(
                        "redis unreachable; rate limits are per replica until it answers", extra={"error": repr(exc)}
                    )
                    self._set_degraded(True)
            else:
                if self.degraded:
                    log.warning("redis answers again; rate limits are shared")
                    self._set_degraded(False)
                return decision
        return await self._fallback.hit(key, rate, burst, cost)

    def _set_degraded(self, degraded: bool) -> None:
        self.degraded = degraded
        self._on_change(degraded)

    async def close(self) -> None:
        await self._primary.close()
