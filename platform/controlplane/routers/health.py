"""Health and telemetry: /healthz (alive), /readyz (backend ready, or why not), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from carina.platform.controlplane.backend_errors import Unavailable
from carina.platform.controlplane.deps import BackendDep, CurrentPrincipal
from carina.platform.controlplane.routers.errors import http_errors
from carina.platform.controlplane.schemas import ErrorResponse, Health
from carina.platform.controlplane.telemetry import REGISTRY

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process answers (no token needed)."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={
        503: {"model": ErrorResponse, "description": "backend not ready, and the reason why"}
    },
)
async def readyz(backend: BackendDep) -> Health:
    """The backend can serve requests (no token needed); 503 says why not (e.g. StorageFull)."""
    with http_errors():
        if await backend.ready():
            return Health(status="ok")
        raise Unavailable("the backend is not ready")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        401: {"model": ErrorResponse, "description": "no valid bearer token"},
        503: {"model": ErrorResponse, "description": "authentication unavailable"},
    },
)
async def metrics(_: CurrentPrincipal) -> Response:
    """The control plane's own metrics (any valid token: they name routes, never tenants)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
