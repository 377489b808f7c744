"""Dependencies of the routes: settings, the backend, the caller and what it may touch.

Authorization is decided before anything is looked up, from the token and the namespace
alone: a token that may not use a namespace gets 403 whether or not the namespace or the
job exists, so the answer reveals nothing about other tenants (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from carina.platform.api.types import NAME_MAX_LENGTH, NAME_PATTERN
from carina.platform.controlplane.backend_errors import Unavailable
from carina.platform.controlplane.backends.base import Backend, Principal
from carina.platform.controlplane.settings import Settings


async def get_settings(request: Request) -> Settings:
    """The app's one Settings object (tests override this dependency)."""
    # `async def` (this and get_backend) although neither waits: FastAPI would run a plain
    # `def` dependency in its thread pool, a thread hop per request to read an attribute.
    settings: Settings = request.app.state.settings
    return settings


async def get_backend(request: Request) -> Backend:
    """The app's backend, built at startup from the settings."""
    backend: Backend = request.app.state.backend
    return backend


SettingsDep = Annotated[Settings, Depends(get_settings)]
BackendDep = Annotated[Backend, Depends(get_backend)]

_bearer = HTTPBearer(auto_error=False, description="a token the backend knows")
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


async def current_principal(
    backend: BackendDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated caller; 401 without a valid bearer token."""
    if credentials is None or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            {"reason": "Unauthorized", "message": "a bearer token is required"},
            headers=_UNAUTHORIZED,
        )
    try:
        principal = await backend.authenticate(credentials.credentials)
    except Unavailable as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, {"reason": "Unavailable", "message": str(exc)}
        ) from None
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            {"reason": "Unauthorized", "message": "the token is not valid"},
            headers=_UNAUTHORIZED,
        )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]

NamespacePath = Annotated[
    str, Path(min_length=1, max_length=63, pattern=NAME_PATTERN, description="namespace")
]
NamePath = Annotated[
    str,
    Path(min_length=1, max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN, description="job name"),
]
QueueNamePath = Annotated[
    str, Path(min_length=1, max_length=63, pattern=NAME_PATTERN, description="ClusterQueue name")
]


async def _check(
    backend: Backend, principal: Principal, namespace: str, verb: str, resource: str
) -> None:
    """403 unless the caller may `verb` `resource` in `namespace` ("": cluster-scoped)."""
    try:
        allowed = await backend.authorize(principal, namespace, verb, resource)
    except Unavailable as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, {"reason": "Unavailable", "message": str(exc)}
        ) from None
    if not allowed:
        where = f" in namespace {namespace}" if namespace else ""
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            {
                "reason": "Forbidden",
                "message": f"{principal.name} may not {verb} {resource}{where}",
            },
        )


def authorized(
    verb: str, resource: str = "trainingjobs"
) -> Callable[[str, Principal, Backend], Awaitable[str]]:
    """A dependency: the path's namespace, once the caller may `verb` `resource` in it."""

    async def dependency(
        namespace: NamespacePath, principal: CurrentPrincipal, backend: BackendDep
    ) -> str:
        await _check(backend, principal, namespace, verb, resource)
        return namespace

    return dependency


def cluster_authorized(
    verb: str, resource: str
) -> Callable[[Principal, Backend], Awaitable[Principal]]:
    """A dependency: the caller, once it may `verb` the cluster-scoped `resource`."""

    async def dependency(principal: CurrentPrincipal, backend: BackendDep) -> Principal:
        await _check(backend, principal, "", verb, resource)
        return principal

    return dependency


MayCreate = Annotated[str, Depends(authorized("create"))]
MayList = Annotated[str, Depends(authorized("list"))]
MayGet = Annotated[str, Depends(authorized("get"))]
MayWatch = Annotated[str, Depends(authorized("watch"))]
MayDelete = Annotated[str, Depends(authorized("delete"))]
MayPatch = Annotated[str, Depends(authorized("patch"))]
MayReadLogs = Annotated[str, Depends(authorized("get", "pods/log"))]
MayReadEvents = Annotated[str, Depends(authorized("list", "events"))]
MayListLocalQueues = Annotated[str, Depends(authorized("list", "localqueues"))]
MayListClusterQueues = Annotated[Principal, Depends(cluster_authorized("list", "clusterqueues"))]
MayGetClusterQueue = Annotated[Principal, Depends(cluster_authorized("get", "clusterqueues"))]
