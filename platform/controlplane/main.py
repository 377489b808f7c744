"""The control plane's app: `create_app(settings)` wires settings, backend, routers, limits.

Run it with `carina up` (local backend, embedded substrate) or, in a cluster,
`uvicorn --factory carina.platform.controlplane.main:create_app` with CARINA_BACKEND=kubernetes.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carina.platform.controlplane.backends.base import Backend
from carina.platform.controlplane.console.routes import make_router as console_router
from carina.platform.controlplane.fast_reads import FastReads
from carina.platform.controlplane.routers import (
    health,
    history,
    queues,
    sweeps,
    trainingjobs,
    watch,
)
from carina.platform.controlplane.routers.errors import field_errors
from carina.platform.controlplane.settings import Settings
from carina.platform.controlplane.telemetry import BodySizeLimit, RequestMetrics
from carina.workloads.config import error_path


def make_backend(settings: Settings) -> Backend:
    """The backend the settings name (imported on demand: each has its own dependencies)."""
    if settings.backend == "kubernetes":
        from carina.platform.controlplane.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(settings)
    from carina.platform.controlplane.backends.embedded import LocalBackend

    return LocalBackend(settings)


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> FastAPI:
    """The FastAPI app; `backend` defaults to the one the settings name."""
    settings = settings or Settings()
    backend = backend or make_backend(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await backend.start()
        settle_garbage_collector()
        try:
            yield
        finally:
            await backend.stop()

    app = FastAPI(
        title="Carina control plane",
        version="v1alpha1",
        description="TrainingJobs over REST: submit, follow, suspend, delete.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.backend = backend
    app.include_router(health.router)
    app.include_router(trainingjobs.router)
    app.include_router(sweeps.router)
    app.include_router(queues.router)
    app.include_router(watch.router)
    app.include_router(history.router)
    app.include_router(console_router())
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(405, _method_not_allowed)
    app.add_middleware(
        FastReads, api=app, routes=trainingjobs.router.routes
    )  # innermost: inside the metrics and limits
    app.add_middleware(BodyDepthLimit, limit=MAX_BODY_DEPTH)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestMetrics)
    return app


def settle_garbage_collector() -> None:
    """Keep the collector's full passes short and rare once the server has started.

    What exists by now (modules, the app, its routes and pydantic models) lives as long as the
    process: frozen, later passes no longer walk it. A request leaves little garbage in
    cycles, so the youngest generation is collected every 50,000 allocations rather than
    700; each pass is then still short, and there are fewer of them in a request's way.
    """
    gc.collect()  # what is garbage now would otherwise be frozen with the rest, for good
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(max(_young, YOUNG_GC_THRESHOLD), middle, old)


YOUNG_GC_THRESHOLD = 50_000


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """422 in the manifest's own words: a dotted camelCase path and the rule it breaks."""
    errors = field_errors(exc.errors())
    message = "; ".join(str(e) for e in errors)
    return JSONResponse(
        {
            "detail": {
                "reason": "Invalid",
                "message": message,
                "errors": [{"path": e.path, "rule": e.rule} for e in errors],
            }
        },
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Every error body has one shape: {"detail": {"reason", "message", "errors"}}."""
    if isinstance(exc.detail, dict):
        detail: dict[str, Any] = {"errors": [], **exc.detail}
    else:
        reason = HTTPStatus(exc.status_code).phrase.replace(" ", "")
        detail = {"reason": reason, "message": str(exc.detail), "errors": []}
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def _method_not_allowed(request: Request, _: Exception) -> JSONResponse:
    """405 with every method the path supports in Allow (Starlette names one route's only)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _scope = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    methods.discard("HEAD") if "GET" not in methods else methods.add("HEAD")
    return JSONResponse(
        {
            "detail": {
                "reason": "MethodNotAllowed",
                "message": f"{request.method} is not allowed here",
                "errors": [],
            }
        },
        status_code=status.HTTP_405_METHOD_NOT_ALLOWED,
        headers={"Allow": ", ".join(sorted(methods))},
    )


# A TrainingJob nests about 12 deep (a template's node affinity down to a term's values).
MAX_BODY_DEPTH = 32

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class BodyDepthLimit:
    """Refuse a JSON body nested deeper than `limit` with 422, naming where it goes too deep.

    Free-form values (extra metadata, a template's Kubernetes objects) are kept as written,
    and one nested hundreds deep could not be written back out (pydantic stops at 255).
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        path = too_deep(body, self.limit)
        if path is not None:
            rule = f"nested deeper than {self.limit} levels"
            response = JSONResponse(
                {
                    "detail": {
                        "reason": "Invalid",
                        "message": f"{path}: {rule}",
                        "errors": [{"path": path, "rule": rule}],
                    }
                },
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            )
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def too_deep(body: bytes, limit: int) -> str | None:
    """The path to where a JSON body nests deeper than `limit`, or None (also when not JSON)."""
    # Brackets outside strings, counted without parsing: the common case costs one pass.
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for bracket in brackets:
        depth += 1 if bracket in b"[{" else -1
        deepest = max(deepest, depth)
    if deepest <= limit:
        return None
    try:
        document = json.loads(body)
    except RecursionError:
        return "(root)"
    except ValueError:
        return None  # not JSON: the route answers that
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(document, ())]
    while stack:
        node, loc = stack.pop()
        if len(loc) >= limit:
            return error_path(loc)
        items = node.items() if isinstance(node, dict) else enumerate(node)
        stack.extend((v, (*loc, k)) for k, v in items if isinstance(v, dict | list))
    return None
