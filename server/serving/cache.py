"""Never compute the same item twice: a response cache of model outputs, per replica and shared.

What is cached is one batcher item's raw output (an embedding before Matryoshka cut and normalization,
a pair's or a text's logits), keyed by everything that determines it: the model's identity (its
folder's content digest, backend, dtype, device, kind) and the item's token ids (after prompts and
truncation). So `dimensions`, `normalize` and output types apply after a lookup, and a hit never
crosses models, prompts, truncation settings or weight versions.

Two tiers: an in-process LRU bounded by bytes, and, where Redis is configured, a shared tier with a
TTL (float32 bytes, one pipelined MGET per request). The shared tier can only make a request faster:
when Redis is slow or down, requests are served from the local tier and the model, a gauge says so,
and Redis is tried again after a pause.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from embedserve.models.fingerprint import folder_fingerprint
from embedserve.models.sources import resolve_source
from embedserve.models.types import ModelInfo, Tokens

log = logging.getLogger("embedserve.cache")

ENTRY_OVERHEAD = 200
"""Bytes an entry costs beyond its vector: the key, the array object, the LRU's links (measured ~190)."""


def identity(source: str, info: ModelInfo, kind: str) -> bytes | None:
    """What a model's outputs depend on besides its inputs: its folder's content digest (read once, at
    load, and only where a cache will use it: ~1 s a GB), backend, dtype, device, kind and token limit.
    None for a source that is not a local folder (a hub id), which is not cached."""
    fingerprint = folder_fingerprint(resolve_source(source))
    if fingerprint is None:
        return None
    return f"{fingerprint}:{info.backend}:{info.dtype}:{info.device}:{kind}:{info.max_length}".encode()


def item_key(model_identity: bytes, tokens: Tokens) -> bytes:
    digest = hashlib.blake2b(model_identity, digest_size=16)
    digest.update(np.asarray(tokens.ids, dtype=np.int64).tobytes())
    if tokens.type_ids is not None:
        digest.update(b"|" + np.asarray(tokens.type_ids, dtype=np.int8).tobytes())
    return digest.digest()


class LocalCache:
    """Rows by key, least recently used first out once `max_bytes` is reached."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self._rows: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: bytes) -> np.ndarray | None:
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
        return row

    def put(self, key: bytes, row: np.ndarray) -> None:
        size = row.nbytes + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        old = self._rows.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes + ENTRY_OVERHEAD
        self._rows[key] = row
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self._rows.popitem(last=False)
            self.bytes -= evicted.nbytes + ENTRY_OVERHEAD
            self.evictions += 1


class SharedCache:
    """Rows in Redis, for every replica pointed at it: float32 bytes under a prefix, with a TTL."""

    def __init__(
        self, url: str, *, ttl: float, timeout: float = 0.05, retry_seconds: float = 5.0, prefix: str = "embedserve:c:"
    ) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._ttl_ms = max(1, int(ttl * 1000))
        self._prefix = prefix.encode()
        self._retry_seconds = retry_seconds
        self._down_until = 0.0
        self.degraded = False
        self._writes: set[asyncio.Task[None]] = set()

    @property
    def usable(self) -> bool:
        return time.monotonic() >= self._down_until

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        try:
            values = await self._redis.mget([self._prefix + key for key in keys])
        except Exception as exc:  # refused, timed out, Redis errors: the cache is an optimization
            self._down(exc)
            return [None] * len(keys)
        self._up()
        return values

    def put_many(self, rows: dict[bytes, np.ndarray]) -> None:
        """Writes in the background: a request never waits for the shared tier to store its rows."""
        task = asyncio.get_running_loop().create_task(self._put(rows))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _put(self, rows: dict[bytes, np.ndarray]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, row in rows.items():
                    pipe.set(self._prefix + key, row.astype(np.float32, copy=False).tobytes(), px=self._ttl_ms)
                await pipe.execute()
        except Exception as exc:
            self._down(exc)

    def _down(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self._retry_seconds
        if not self.degraded:
            log.warning(
                "redis unreachable; the response cache is per replica until it answers", extra={"error": repr(exc)}
            )
            self.degraded = True

    def _up(self) -> None:
        if self.degraded:
            log.warning("redis answers again; the response cache is shared")
            self.degraded = False

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self._redis.aclose()


class ResultCache:
    """The local tier, then the shared one for what the local tier misses (kept locally once found)."""

    def __init__(self, local: LocalCache, shared: SharedCache | None = None) -> None:
        self.local = local
        self.shared = shared

    async def lookup(self, keys: Sequence[bytes], shape: tuple[int, ...]) -> list[np.ndarray | None]:
        rows: list[np.ndarray | None] = [self.local.get(key) for key in keys]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing and self.shared is not None and self.shared.usable:
            found = await self.shared.get_many([keys[i] for i in missing])
            size = int(np.prod(shape)) * 4
            for i, value in zip(missing, found):
                if value is not None and len(value) == size:
                    row = np.frombuffer(value, dtype=np.float32).reshape(shape).copy()
                    self.local.put(keys[i], row)
                    rows[i] = row
        return rows

    def store(self, rows: dict[bytes, np.ndarray]) -> None:
        for key, row in rows.items():
            self.local.put(key, row)
        if rows and self.shared is not None and self.shared.usable:
            self.shared.put_many(rows)

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()
