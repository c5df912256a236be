"""Operator routes: health, readiness, Prometheus metrics."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import PlainTextResponse, Response

from embedserve.server.api.common import host_of
from embedserve.server.http.responses import json_response

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> Response:
    """The process is up and answering (models may still be loading)."""
    return json_response({"status": "ok"})


@router.get("/health/live")
async def live() -> Response:
    return json_response({"status": "ok"})


@router.get("/health/ready", responses={503: {"description": "Models still loading, one failed to load, or draining"}})
async def ready(request: Request) -> Response:
    """200 once every model is loaded and warmed; 503 while loading, after a failed load, or while draining."""
    host = host_of(request)
    status = "draining" if host.draining else ("ready" if host.ready else "not ready")
    body: dict = {"status": status, "models": host.status}
    if host.loading_since:  # which models are still loading, and for how long
        now = time.time()
        body["loading"] = {
            model_id: {
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)),
                "seconds": round(now - since, 1),
            }
            for model_id, since in host.loading_since.items()
        }
    if host.errors:
        body["errors"] = host.errors
    return json_response(body, 200 if host.ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)  # documented as text/plain, not JSON
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
