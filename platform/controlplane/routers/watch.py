"""/api/v1/watch/namespaces/{namespace}/trainingjobs[/{name}]: jobs' changes as they happen.

A server-sent-events stream: `event: ADDED|MODIFIED|DELETED` with `data:` the job's JSON as
GET serves it (one line), first ADDED for each job there, then each change; a comment line
every `watch_heartbeat_seconds` keeps proxies from closing an idle stream and tells the
server when the client has gone. The path is the Kubernetes API's watch path, so a job
named `watch` stays a job.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from carina.platform.controlplane.deps import BackendDep, MayWatch, NamePath, SettingsDep
from carina.platform.controlplane.job_watch import JobWatch
from carina.platform.controlplane.routers.errors import ERROR_RESPONSES, http_errors

router = APIRouter(
    prefix="/api/v1/watch/namespaces/{namespace}/trainingjobs",
    tags=["trainingjobs"],
    responses=ERROR_RESPONSES,
)

_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "server-sent events: ADDED, MODIFIED, DELETED with the job's JSON",
    }
}


@router.get("", response_class=StreamingResponse, responses=_STREAM)
async def watch_jobs(
    namespace: MayWatch, backend: BackendDep, settings: SettingsDep
) -> StreamingResponse:
    """Every job of the namespace as it is now (ADDED), then each change as it happens."""
    with http_errors():
        watch = await backend.watch(namespace, None)
    return _stream(watch, settings.watch_heartbeat_seconds)


@router.get("/{name}", response_class=StreamingResponse, responses=_STREAM)
async def watch_job(
    namespace: MayWatch, name: NamePath, backend: BackendDep, settings: SettingsDep
) -> StreamingResponse:
    """One job as it is now (ADDED), then each change to it; 404 if it is not there."""
    with http_errors():
        watch = await backend.watch(namespace, name)
    return _stream(watch, settings.watch_heartbeat_seconds)


def _stream(watch: JobWatch, heartbeat: float) -> StreamingResponse:
    return StreamingResponse(
        server_sent_events(watch, heartbeat),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def server_sent_events(watch: JobWatch, heartbeat: float) -> AsyncIterator[str]:
    """The watcher's events as SSE text, a comment when nothing happened for `heartbeat` s.

    It ends when the client goes (the stream is cancelled), and the watcher with it.
    """
    try:
        yield ": watching\n\n"  # the headers go out now, not with the first change
        while True:
            try:
                event = await asyncio.wait_for(watch.next(), heartbeat)
            except TimeoutError:
                yield ": heartbeat\n\n"
                continue
            yield f"event: {event.type}\ndata: {event.object}\n\n"
    finally:
        watch.close()
