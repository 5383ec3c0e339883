"""Health, readiness, Prometheus metrics and the daemon's status: the read-only routes."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from daemon.api.asgi import json_response
from daemon.api.metrics import CONTENT_TYPE, Metrics
from daemon.control import DaemonControl


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]


def status_routes(*, control: DaemonControl, metrics: Metrics) -> APIRouter:
    """GET /healthz, /readyz, /metrics and /status."""
    router = APIRouter()

    @router.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """The process is alive and its event loop answers."""
        return Health(status="ok")

    @router.get(
        "/readyz",
        response_model=Readiness,
        tags=["health"],
        responses={503: {"model": Readiness, "description": "not ready"}},
    )
    async def readyz() -> Response:
        """Feed connected, model warm, journal writable: 200 when every check passes, else 503."""
        checks = {str(k): bool(v) for k, v in control.readiness().items()}
        ready = bool(checks) and all(checks.values())
        return json_response({"ready": ready, "checks": checks}, 200 if ready else 503)

    @router.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.render_latest(), media_type=CONTENT_TYPE)

    @router.get("/status", tags=["daemon"], responses={200: {"content": {"application/json": {}}}})
    async def daemon_status() -> Response:
        """Positions, open orders, P&L today, trading state and model bundle id."""
        return json_response(control.status(), 200)

    return router
