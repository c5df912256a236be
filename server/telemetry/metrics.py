"""Prometheus metrics, one registry per app (so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily

from embedserve.models.memory import rss_bytes
from embedserve.models.neighbours import neighbour_meter

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class _ProcessMemory:
    def collect(self):  # type: ignore[no-untyped-def]
        yield GaugeMetricFamily("embed_process_resident_bytes", "Resident memory of the server process.", rss_bytes())


class _CpuNeighbours:
    def collect(self):  # type: ignore[no-untyped-def]
        yield GaugeMetricFamily(
            "embed_cpu_neighbours_busy",
            "1 while other processes keep this process's CPUs busy (models/neighbours.py): ONNX runners then overlap "
            "big forward passes, and items/s fall as the cores are shared.",
            float(neighbour_meter().crowded()),
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # The standard process_* (CPU, memory, open files) and python_* (GC, version) families.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter(
            "embed_requests", "Requests by model, route and status.", ["model", "route", "status"], registry=r
        )
        self.duration = Histogram(
            "embed_request_duration_seconds",
            "Request latency.",
            ["model", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "embed_errors", "Error answers by model, route and type.", ["model", "route", "type"], registry=r
        )
        self.rejections = Counter("embed_rejections", "Requests refused, by reason.", ["model", "reason"], registry=r)
        self.tokens = Counter("embed_tokens", "Input tokens processed.", ["model"], registry=r)
        self.queue_items = Gauge("embed_queue_items", "Items waiting in the batcher.", ["model"], registry=r)
        self.queue_tokens = Gauge("embed_queue_tokens", "Tokens waiting in the batcher.", ["model"], registry=r)
        self.queue_wait = Histogram(
            "embed_queue_wait_seconds",
            "Time a batch's oldest item waited.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "embed_batch_seconds", "Forward pass time per batch.", ["model"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "embed_batch_size", "Items per batch.", ["model"], buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "embed_batch_tokens", "Real tokens per batch.", ["model"], buckets=_TOKEN_BUCKETS, registry=r
        )
        self.batch_padded_tokens = Histogram(
            "embed_batch_padded_tokens", "Padded tokens per batch.", ["model"], buckets=_TOKEN_BUCKETS, registry=r
        )
        self.model_memory = Gauge(
            "embed_model_memory_bytes",
            "Memory taken by loading the model; 0 while it is unloaded.",
            ["model"],
            registry=r,
        )
        self.model_load = Gauge("embed_model_load_seconds", "Time to load and warm the model.", ["model"], registry=r)
        self.model_ready = Gauge(
            "embed_model_ready",
            "1 while the model is loaded and warmed; 0 while loading or unloaded.",
            ["model"],
            registry=r,
        )
        self.model_loads = Counter(
            "embed_model_loads",
            "Model loads (at start and on demand), by outcome: loaded or failed.",
            ["model", "outcome"],
            registry=r,
        )
        self.model_unloads = Counter(
            "embed_model_unloads",
            "Models unloaded, by reason: idle (its keep_alive passed) or evicted (to make room within the model "
            "memory budget).",
            ["model", "reason"],
            registry=r,
        )
        self.model_load_duration = Histogram(
            "embed_model_load_duration_seconds",
            "Time each load took, warm-up included.",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.cache_requests = Counter(
            "embed_cache_requests",
            "Items looked up in the response cache, by model and result (hit: served without computing,"
            " single-flight waits included; miss: computed).",
            ["model", "result"],
            registry=r,
        )
        self.cache_bytes = Gauge("embed_cache_bytes", "Bytes held by this replica's response cache.", registry=r)
        self.cache_entries = Gauge("embed_cache_entries", "Items held by this replica's response cache.", registry=r)
        self.cache_evictions = Counter(
            "embed_cache_evictions", "Items dropped from the response cache to stay within its size.", registry=r
        )
        self.cache_shared_degraded = Gauge(
            "embed_cache_redis_degraded",
            "1 while Redis is unreachable and the response cache is this replica's own.",
            registry=r,
        )
        self.ratelimit_degraded = Gauge(
            "embed_ratelimit_redis_degraded",
            "1 while Redis is unreachable and rate limits fall back to this replica's own counts.",
            registry=r,
        )
        self.upstream_calls = Counter(
            "embed_upstream_calls",
            "Calls to upstream endpoints by outcome: ok, rejected (4xx), error (5xx/429), timeout, unreachable, invalid.",
            ["model", "endpoint", "outcome"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "embed_upstream_call_seconds",
            "Upstream call latency (to the answer's headers for relayed streams).",
            ["model", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_outstanding = Gauge(
            "embed_upstream_outstanding", "Calls in flight per upstream endpoint.", ["model", "endpoint"], registry=r
        )
        self.upstream_healthy = Gauge(
            "embed_upstream_endpoint_healthy",
            "1 while an upstream endpoint is in rotation, 0 while ejected.",
            ["model", "endpoint"],
            registry=r,
        )
        self.upstream_ejections = Counter(
            "embed_upstream_ejections",
            "Times an upstream endpoint was taken out of rotation after consecutive failures.",
            ["model", "endpoint"],
            registry=r,
        )
        self.batch_lines = Counter(
            "embed_batch_lines",
            "Lines of Batch API jobs processed, by outcome (completed: in the output file; failed: in the error file).",
            ["status"],
            registry=r,
        )
        r.register(_ProcessMemory())
        r.register(_CpuNeighbours())

    def batch_observer(self, model: str) -> BatchMetrics:
        return BatchMetrics(self, model)


class BatchMetrics:
    """The batcher's observer for one model, with its label children resolved once."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._queue_items = metrics.queue_items.labels(model)
        self._queue_tokens = metrics.queue_tokens.labels(model)
        self._wait = metrics.queue_wait.labels(model)
        self._seconds = metrics.batch_seconds.labels(model)
        self._size = metrics.batch_size.labels(model)
        self._tokens = metrics.batch_tokens.labels(model)
        self._padded = metrics.batch_padded_tokens.labels(model)
        self._processed = metrics.tokens.labels(model)

    def on_queue(self, items: int, tokens: int) -> None:
        self._queue_items.set(items)
        self._queue_tokens.set(tokens)

    def on_batch(self, size: int, tokens: int, padded_tokens: int, queue_seconds: float, run_seconds: float) -> None:
        self._size.observe(size)
        self._tokens.observe(tokens)
        self._padded.observe(padded_tokens)
        self._wait.observe(queue_seconds)
        self._seconds.observe(run_seconds)
        self._processed.inc(tokens)
