"""Health and telemetry: /healthz (alive), /readyz (backend reachable), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from carina.platform.server.deps import BackendDep, CurrentPrincipal
from carina.platform.server.schemas import ErrorResponse, Health
from carina.platform.server.telemetry import REGISTRY

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process answers (no token needed)."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "backend not ready"}},
)
async def readyz(backend: BackendDep, response: Response) -> Health:
    """The backend can serve requests (no token needed)."""
    if await backend.ready():
        return Health(status="ok")
    response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="unavailable")


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
