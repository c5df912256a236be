"""embedserve as a Ray Serve deployment: the same FastAPI app (`server.app.create_app`) in every replica.

Each replica builds its own app in its own process (only the settings travel, never the app), and Ray Serve runs
the app's lifespan when the replica starts, so each replica loads its models and runs embedserve's own batcher.
Ray places replicas (CPUs or a GPU each) and scales their number on ongoing requests; its HTTP proxy spreads
requests over them. From the repository root (`pip install -e '.[torch,ray]'`):

    serve run deploy.ray.serve_app:build num_cpus=2 min_replicas=1 max_replicas=4
    serve run deploy.ray.serve_app:build num_gpus=1 max_replicas=2 models_file=/models/models.yaml
    serve deploy deploy/ray/serve.yaml          # the same, on a running cluster, from a config file

Any other `key=value` is an embedserve setting (server/config/settings.py), e.g. `threads=2`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from embedserve.server.app import create_app
from embedserve.server.config.settings import Settings


def wait_for_models(app: FastAPI) -> FastAPI:
    """Ray sends traffic to a replica once its lifespan startup returns, but embedserve loads models in the
    background after it (so /health answers meanwhile). Holding startup until they are loaded keeps requests off a
    replica that would answer 503; a failed load fails the replica, and Ray starts another."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with inner(app) as state:
            host = app.state.host
            while "loading" in host.status.values():
                await asyncio.sleep(0.05)
            if host.errors:
                raise RuntimeError(f"models failed to load: {host.errors}")
            yield state

    app.router.lifespan_context = lifespan
    return app


@serve.deployment(
    # Our batcher wants many requests in flight per replica (Ray's default of 5 would starve it); Ray queues the rest.
    max_ongoing_requests=256,
    autoscaling_config={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 64},
    ray_actor_options={"num_cpus": 2},
    graceful_shutdown_timeout_s=30,  # as EMBEDSERVE_SHUTDOWN_GRACE_SECONDS: in-flight batches finish
)
@serve.ingress()  # no app here: __serve_build_asgi_app__ builds it inside each replica
class EmbedServe:
    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = Settings(**(settings or {}))  # EMBEDSERVE_* variables of the replica fill the rest

    def __serve_build_asgi_app__(self) -> FastAPI:
        return wait_for_models(create_app(self.settings))

    def check_health(self) -> None:
        """Ray restarts a replica whose check raises: one whose app stopped being ready outside a drain."""
        host = self.app.state.host
        if not host.ready and not host.draining:
            raise RuntimeError(f"models not ready: {host.status}")


_DEPLOYMENT_OPTIONS = {"num_cpus", "num_gpus", "min_replicas", "max_replicas", "target_ongoing_requests"}


def build(args: dict[str, str]) -> Application:
    """`serve run deploy.ray.serve_app:build key=value ...`: replica placement and autoscaling from `num_cpus`,
    `num_gpus`, `min_replicas`, `max_replicas`, `target_ongoing_requests`; every other key is a setting."""
    settings = {key: value for key, value in args.items() if key not in _DEPLOYMENT_OPTIONS}
    actor = {"num_cpus": float(args.get("num_cpus", 2)), "num_gpus": float(args.get("num_gpus", 0))}
    settings.setdefault("threads", str(max(1, int(actor["num_cpus"]))))  # the runtime would count the node's cores
    autoscaling = {
        "min_replicas": int(args.get("min_replicas", 1)),
        "max_replicas": int(args.get("max_replicas", 4)),
        "target_ongoing_requests": float(args.get("target_ongoing_requests", 64)),
    }
    deployment = EmbedServe.options(ray_actor_options=actor, autoscaling_config=autoscaling)
    return deployment.bind(settings)
