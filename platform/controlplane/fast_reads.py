"""GET one job and GET a page of jobs, answered without FastAPI's routing and dependencies.

These two reads are most of what clients send (`carina run` polls, the console lists), and
most of their CPU time was FastAPI's own work per request: matching the route, solving the
dependency graph of authentication and authorization, the exception and exit-stack layers
(docs/benchmarks.md). `FastReads` answers a request only when it is one of the two, well
formed, with a valid bearer token that may read the namespace, and the backend has the
answer; it then does exactly what the routes do, in the same order (authenticate,
authorize, look up), and sends the same bytes. Anything else - another route or method, a
parameter FastAPI would refuse or that this class does not know, a missing or unknown
token, a namespace the caller may not read, a job not found, a backend error, overridden
dependencies - goes to the app untouched, which then answers as it always has (401/403
before any lookup, the one error shape). Such a request costs a second authentication, and
a lookup it may repeat; only errors take that way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from carina.platform.api.types import NAME_MAX_LENGTH, NAME_PATTERN

JOBS_ROUTE = "/api/v1/namespaces/{namespace}/trainingjobs"
JOB_ROUTE = JOBS_ROUTE + "/{name}"
_PREFIX = "/api/v1/namespaces/"
# The routes' own patterns, matched in full (`$` in Python would let a trailing newline by).
_NAME = re.compile(NAME_PATTERN.removeprefix("^").removesuffix("$"))
_CONTINUE = re.compile(r"[A-Za-z0-9+/=_.-]*")
_LIMIT = re.compile(r"[0-9]{1,4}")
_DEFAULT_LIMIT = 100  # routers/trainingjobs.py: list_jobs
_HEADERS = [(b"content-type", b"application/json")]


class Read:
    """What a request asks for, when it is one of the two reads in a form the routes accept."""

    __slots__ = ("after", "limit", "name", "namespace", "token")

    def __init__(
        self, namespace: str, name: str | None, limit: int, after: str, token: str
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.limit = limit
        self.after = after
        self.token = token


def parse_read(method: str, path: str, query: bytes, authorization: bytes | None) -> Read | None:
    """The read a request asks for, or None when the app should answer it.

    None also for anything the app would refuse (bad names, limits, continue tokens,
    unknown or repeated query parameters, no bearer token), so that the app's answer,
    error body included, stays the only one.
    """
    if method != "GET" or not path.startswith(_PREFIX) or authorization is None:
        return None
    parts = path[len(_PREFIX) :].split("/")
    if len(parts) not in (2, 3) or parts[1] != "trainingjobs":
        return None
    namespace = parts[0]
    if len(namespace) > 63 or not _NAME.fullmatch(namespace):
        return None
    scheme, _, credentials = authorization.decode("latin-1").partition(" ")
    token = credentials.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    if len(parts) == 3:
        name = parts[2]
        if query or len(name) > NAME_MAX_LENGTH or not _NAME.fullmatch(name):
            return None
        return Read(namespace, name, 0, "", token)
    params = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    given = dict(params)
    if len(given) != len(params) or not given.keys() <= {"limit", "continue"}:
        return None
    limit_text = given.get("limit", str(_DEFAULT_LIMIT))
    after = given.get("continue", "")
    if not _LIMIT.fullmatch(limit_text) or not 1 <= int(limit_text) <= 1000:
        return None
    if len(after) > 4096 or not _CONTINUE.fullmatch(after):
        return None
    return Read(namespace, None, int(limit_text), after, token)


class FastReads:
    """ASGI middleware: the two reads answered directly, everything else passed to `app`.

    `api` is the FastAPI app whose state holds the backend; while any of its dependencies
    is overridden (tests do that), every request goes the app's way. `routes` holds the
    two routes (the trainingjobs router's).
    """

    def __init__(self, app: ASGIApp, api: FastAPI, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.api = api
        # The routes' objects, which the request metrics label requests by (route.path).
        self._routes = {
            r.path: r for r in routes if isinstance(r, APIRoute) and "GET" in (r.methods or ())
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        read = None
        if (
            scope["type"] == "http"
            and not scope.get("root_path")
            and not self.api.dependency_overrides
        ):
            read = parse_read(
                scope["method"], scope["path"], scope["query_string"], _authorization(scope)
            )
        body = await self._answer(read) if read is not None else None
        if body is None:
            await self.app(scope, receive, send)
            return
        route = self._routes.get(
            JOBS_ROUTE if read is not None and read.name is None else JOB_ROUTE
        )
        if route is not None:
            scope["route"] = route
        data = body.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(data)).encode()), *_HEADERS],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def _answer(self, read: Read) -> str | None:
        """The response body, or None when the app should answer (and say why)."""
        backend: Any = self.api.state.backend
        one_hop = getattr(backend, "authorized_read", None)
        try:
            if one_hop is not None:  # the local backend: all of it in one worker thread
                found: str | None = await one_hop(
                    read.token, read.namespace, read.name, read.limit, read.after
                )
                return found
            principal = await backend.authenticate(read.token)
            if principal is None:
                return None
            verb = "list" if read.name is None else "get"
            if not await backend.authorize(principal, read.namespace, verb, "trainingjobs"):
                return None
            if read.name is not None:
                text: str = await backend.get(read.namespace, read.name)
                return text
            page = await backend.list(read.namespace, read.limit, read.after)
        except Exception:
            return None  # the app asks again and answers with its error
        return page if isinstance(page, str) else str(page.model_dump_json(by_alias=True))


def _authorization(scope: Scope) -> bytes | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            return bytes(value)
    return None
