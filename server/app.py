"""The FastAPI application, assembled from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from embedserve.batching.config import BatchingConfig
from embedserve.models.registry import ModelRegistry
from embedserve.models.sources import DEFAULT_MODEL, spec_from_cli
from embedserve.models.spec import ModelSpec
from embedserve.server import __version__
from embedserve.server.api import batches, cohere, generation, jina, native, openai, ops, rerank, tei, upstream_admin
from embedserve.server.api.inference import inference_routes
from embedserve.server.api.openai_schemas import EmbeddingsRequest
from embedserve.server.api.upstream_admin import ADMIN_PATHS
from embedserve.server.batches.lines import Route
from embedserve.server.batches.runner import Runner
from embedserve.server.batches.store import Store
from embedserve.server.config.models_file import ModelEntry, load_models_file
from embedserve.server.config.settings import Settings
from embedserve.server.http import calls
from embedserve.server.http.admission import AdmissionMiddleware, Door
from embedserve.server.http.auth import Authenticator
from embedserve.server.http.errors import ApiError, install_error_handlers
from embedserve.server.http.fast_routes import install_fast_routes
from embedserve.server.http.guard import GuardMiddleware, Limits, TokenAdmission
from embedserve.server.http.middleware import RequestContextMiddleware
from embedserve.server.http.ratelimit import BucketStore, FallbackStore, MemoryStore, RedisStore
from embedserve.server.serving.cache import LocalCache, ResultCache, SharedCache
from embedserve.server.serving.model_host import ModelHost
from embedserve.server.serving.residency import Residency
from embedserve.server.serving.upstream.config import UpstreamSpec
from embedserve.server.serving.upstream.gateway import Gateway
from embedserve.server.telemetry import tracing
from embedserve.server.telemetry.metrics import Metrics


def upstream_models(settings: Settings) -> list[UpstreamSpec]:
    """The models file's `kind: upstream` entries."""
    if settings.models_file is None:
        return []
    return [entry for entry in load_models_file(settings.models_file) if isinstance(entry, UpstreamSpec)]


def model_residency(settings: Settings) -> dict[str, Residency]:
    """When each models-file entry is in memory (`preload`, `keep_alive`); models it does not list are loaded
    at start and kept."""
    if settings.models_file is None:
        return {}
    entries = load_models_file(settings.models_file)
    return {entry.id: entry.residency() for entry in entries if isinstance(entry, ModelEntry)}


def served_models(settings: Settings) -> list[tuple[ModelSpec, BatchingConfig]]:
    """The models to serve here, each with its batching limits: the models file, then `--model` flags;
    with neither (and no upstream), the bundled default. Server-wide device/dtype/threads/int8_any_cpu fill what an
    entry leaves unset."""
    batching = settings.batching()
    served: list[tuple[ModelSpec, BatchingConfig]] = []
    entries = load_models_file(settings.models_file) if settings.models_file is not None else []
    served += [(entry.spec(), entry.batching_config(batching)) for entry in entries if isinstance(entry, ModelEntry)]
    served += [(spec_from_cli(value), batching) for value in settings.models]
    if not served and not entries:
        served = [(DEFAULT_MODEL, batching)]
    defaults = {
        "device": settings.device,
        "dtype": settings.dtype,
        "threads": settings.threads,
        "int8_any_cpu": settings.int8_any_cpu or None,
    }
    return [
        (
            spec.model_copy(
                update={k: v for k, v in defaults.items() if k not in spec.model_fields_set and v is not None}
            ),
            config,
        )
        for spec, config in served
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    served = served_models(settings)
    gateway = Gateway(upstream_models(settings), metrics, models_file=settings.models_file)
    local_names = {name for spec, _ in served for name in spec.names}
    if clash := sorted(local_names & gateway.names):
        raise ValueError(f"model names used by both a local and an upstream entry: {', '.join(clash)}")
    host = ModelHost(
        ModelRegistry([spec for spec, _ in served]),
        {spec.id: config for spec, config in served},
        metrics,
        tokenize_inline_chars=settings.tokenize_inline_chars,
        cache=response_cache(settings),
        residency=model_residency(settings),
        memory_budget=settings.model_memory_bytes,
    )

    authenticator = Authenticator(
        settings.api_keys,
        settings.api_keys_file,
        jwt_secret=settings.jwt_secret,
        jwt_audience=settings.jwt_audience or None,
    )
    store = rate_limit_store(settings, metrics)
    limits = Limits(
        requests_per_second=settings.rate_limit_rps,
        burst=settings.rate_limit_burst,
        tokens_per_minute=settings.rate_limit_tokens_per_minute,
        global_requests_per_second=settings.global_rate_limit_rps,
        global_burst=settings.global_rate_limit_burst,
        max_tokens_per_request=settings.max_tokens_per_request,
    )
    tokens = TokenAdmission(store, limits, metrics)

    traced = tracing.configure(__version__)
    batch_store = Store(settings.batch_data_dir())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await host.start()
        await gateway.start()
        await app.state.batch_runner.start()  # resumes the jobs a previous process left (they wait for models)
        try:
            yield
        finally:
            await app.state.batch_runner.close()  # first: its lines in flight need the models
            await host.close()
            await gateway.close()
            batch_store.close()
            if traced:
                tracing.shutdown()
            if isinstance(store, FallbackStore):
                await store.close()

    app = FastAPI(
        title="embedserve",
        version=__version__,
        description="Text embeddings over HTTP: OpenAI-compatible and native routes, micro-batched.",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry (spans, metrics and logs per request through the global providers):
        # off. Our server span and its tokenize/queue/forward children (server/telemetry/tracing.py) say more, and
        # the per-request cost on the hot routes is ours to keep small.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.host = host
    app.state.gateway = gateway
    app.state.batch_store = batch_store
    app.state.batch_runner = Runner(
        batch_store,
        app,
        {"/v1/embeddings": Route("/v1/embeddings", EmbeddingsRequest, openai.create_embeddings)},
        metrics,
        concurrency=settings.batch_concurrency,
        max_line_bytes=settings.max_body_bytes,
        loading=lambda: any(state == "loading" for state in host.status.values()),
        admission=lambda owner: tokens.admission(authenticator.caller(owner)),
        draining=lambda: host.draining,
    )
    install_error_handlers(app)
    routers = (
        openai.router,
        jina.router,
        cohere.router,
        cohere.v1_router,
        native.router,
        rerank.router,
        tei.router,
        generation.router,
        upstream_admin.router,
        batches.router,
        ops.router,
    )
    for router in routers:
        app.include_router(router)
    inference = inference_routes(routers)
    install_fast_routes(app, routers, inference)  # the hot paths, in front of their FastAPI routes
    routes = {route.path for router in routers for route in router.routes if hasattr(route, "path")}
    door = Door(
        host,
        routes=inference,
        remote_kinds=lambda: {kind for kind in ("embed", "rerank") if gateway.serving(kind)},
        deadline=lambda headers: door_deadline(headers, settings),
        metrics=metrics,
    )
    app.state.door = door  # our HTTP protocol asks it as soon as a request's head is parsed
    # For other ASGI servers: inside the guard, so callers are authenticated and rate-limited first.
    app.add_middleware(AdmissionMiddleware, door=door)
    app.add_middleware(
        GuardMiddleware,
        authenticator=authenticator,
        public_paths=[*settings.public_paths(), *ADMIN_PATHS],  # the admin API checks its own key
        store=store,
        limits=limits,
        metrics=metrics,
        tokens=tokens,
    )
    app.add_middleware(  # added last: the outermost layer, so ids, metrics and logs cover refusals too
        RequestContextMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        body_read_timeout=settings.body_read_timeout,
        access_log=settings.access_log,
        access_log_probes=settings.access_log_probes,
        routes=routes,
        body_limits={batches.FILES_PATH: settings.max_file_bytes + batches.FORM_OVERHEAD_BYTES},
    )
    return app


def door_deadline(headers: Iterable[tuple[bytes, bytes]], settings: Settings) -> float | None:
    """The deadline a request asks for, read off its headers before its body (None: a bad value, which
    its route answers with a 400)."""
    try:
        return calls.deadline(headers, settings)
    except ApiError:
        return None


def response_cache(settings: Settings) -> ResultCache | None:
    """The response cache: this replica's own tier, and Redis's where one is configured (off: cache_bytes 0)."""
    size = settings.cache_size()
    if size == 0:
        return None
    shared = SharedCache(settings.redis_url, ttl=settings.cache_ttl_seconds) if settings.redis_url else None
    return ResultCache(LocalCache(size), shared)


def rate_limit_store(settings: Settings, metrics: Metrics) -> BucketStore:
    if not settings.redis_url:
        return MemoryStore()

    def on_change(degraded: bool) -> None:
        metrics.ratelimit_degraded.set(1 if degraded else 0)

    return FallbackStore(RedisStore(settings.redis_url), MemoryStore(), on_change=on_change)
