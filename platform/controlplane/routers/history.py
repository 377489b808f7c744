"""/api/v1/namespaces/{namespace}/history: the records of finished and deleted jobs.

Authorized as the job routes are (listing needs `list trainingjobs`, a record `get
trainingjobs` in the namespace, decided before anything is looked up). A record's events and
log tails are the job's events and pod logs, so they are shown to a caller who may read
those (`list events`, `get pods/log`) and left empty for one who may not.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from carina.platform.controlplane.backend_errors import Invalid, NotFound, Unavailable
from carina.platform.controlplane.backends.base import Backend, Principal
from carina.platform.controlplane.deps import BackendDep, CurrentPrincipal, MayGet, MayList
from carina.platform.controlplane.routers.errors import ERROR_RESPONSES, http_errors
from carina.platform.history.query import DEFAULT_LIMIT, MAX_LIMIT, QueryError, history_query
from carina.platform.history.record import HistoryListing, HistoryRecord
from carina.platform.history.store import HistoryStore, HistoryUnavailable

router = APIRouter(
    prefix="/api/v1/namespaces/{namespace}/history", tags=["history"], responses=ERROR_RESPONSES
)

UID_PATTERN = r"^[A-Za-z0-9-]{1,64}$"


def _store(backend: Backend) -> HistoryStore:
    if backend.history is None:
        raise NotFound(
            "job history is off on this server: set CARINA_HISTORY_URL (the chart's"
            " history.enabled) to record finished and deleted jobs"
        )
    return backend.history


@router.get("", responses={200: {"model": HistoryListing, "description": "a page of records"}})
async def list_history(
    namespace: MayList,
    backend: BackendDep,
    phase: Annotated[str | None, Query(max_length=32, description="Succeeded, Failed ...")] = None,
    name: Annotated[str | None, Query(max_length=63, description="the job's name")] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="RFC 3339: ended at or after")
    ] = None,
    until: Annotated[
        str | None, Query(max_length=64, description="RFC 3339: ended at or before")
    ] = None,
    label_selector: Annotated[
        str | None,
        Query(alias="labelSelector", max_length=4096, description="key=value,key2=value2"),
    ] = None,
    limit: Annotated[int, Query(description=f"page size, 1 to {MAX_LIMIT}")] = DEFAULT_LIMIT,
    continue_: Annotated[
        str | None,
        Query(alias="continue", max_length=1024, description="`continue` of the previous page"),
    ] = None,
) -> dict[str, Any]:
    """Records of the namespace's jobs, newest finished (or deleted) first, a page at a time."""
    with http_errors():
        try:
            query = history_query(
                phase=phase,
                name=name,
                since=since,
                until=until,
                label_selector=label_selector,
                limit=limit,
                continue_=continue_,
            )
        except QueryError as exc:
            raise Invalid(str(exc), [(exc.param, exc.rule)]) from None
        store = _store(backend)
        try:
            page = await asyncio.to_thread(store.list, namespace, query)
        except HistoryUnavailable as exc:
            raise Unavailable(str(exc)) from None
    return {
        "items": [s.model_dump(mode="json", by_alias=True) for s in page.items],
        "continue": page.continue_,
    }


@router.get("/{uid}", responses={200: {"model": HistoryRecord, "description": "one record"}})
async def get_history(
    namespace: MayGet,
    uid: Annotated[str, Path(pattern=UID_PATTERN, description="the job's metadata.uid")],
    backend: BackendDep,
    principal: CurrentPrincipal,
) -> dict[str, Any]:
    """One record: summary, spec, status, conditions, events, metrics and log tails."""
    with http_errors():
        store = _store(backend)
        try:
            record = await asyncio.to_thread(store.get, namespace, uid)
        except HistoryUnavailable as exc:
            raise Unavailable(str(exc)) from None
        if record is None:
            raise NotFound(f"no history record {uid} in namespace {namespace}")
        record = await _readable(record, backend, principal, namespace)
    return record.model_dump(mode="json", by_alias=True)


async def _readable(
    record: HistoryRecord, backend: Backend, principal: Principal, namespace: str
) -> HistoryRecord:
    """The record without the events or logs the caller may not read in the namespace."""
    try:
        events = await backend.authorize(principal, namespace, "list", "events")
        logs = await backend.authorize(principal, namespace, "get", "pods/log")
    except Unavailable:
        events = logs = False
    update: dict[str, Any] = {}
    if not events:
        update["events"] = []
    if not logs:
        update["logs"] = {}
    return record.model_copy(update=update) if update else record
