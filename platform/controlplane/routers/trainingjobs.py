"""/api/v1/namespaces/{namespace}/trainingjobs: create, list, get, delete, suspend, resume,
and a job's metric series, events and worker logs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response, status
from fastapi.responses import PlainTextResponse

from carina.platform.api.types import TrainingJob
from carina.platform.controlplane.backend_errors import Invalid
from carina.platform.controlplane.dependency_check import refuse_dependency_loop
from carina.platform.controlplane.deps import (
    BackendDep,
    MayCreate,
    MayDelete,
    MayGet,
    MayList,
    MayPatch,
    MayReadEvents,
    MayReadLogs,
    NamePath,
    SettingsDep,
)
from carina.platform.controlplane.routers.errors import ERROR_RESPONSES, http_errors
from carina.platform.controlplane.schemas import EventList, JobList, MetricSeries

router = APIRouter(
    prefix="/api/v1/namespaces/{namespace}/trainingjobs",
    tags=["trainingjobs"],
    responses=ERROR_RESPONSES,
)

_JOB = {"model": TrainingJob, "description": "the TrainingJob"}
_JSON = "application/json"


def _json(text: str, code: int = status.HTTP_200_OK) -> Response:
    return Response(text, status_code=code, media_type=_JSON)


@router.post("", status_code=status.HTTP_201_CREATED, responses={201: _JOB})
async def create_job(
    namespace: MayCreate,
    job: Annotated[TrainingJob, Body(description="a TrainingJob manifest")],
    backend: BackendDep,
) -> Response:
    """Submit a TrainingJob; 422 names each broken field and rule (a loop of dependencies
    with the stored jobs among them), 409 if the name is taken."""
    with http_errors():
        if job.metadata.namespace not in (None, namespace):
            raise Invalid(
                f"metadata.namespace must be {namespace} (the namespace in the URL) or unset",
                [("metadata.namespace", f"must equal the URL's namespace {namespace}")],
            )
        await refuse_dependency_loop(namespace, job, backend)
        return _json(await backend.create(namespace, job), status.HTTP_201_CREATED)


@router.get("", responses={200: {"model": JobList, "description": "a page of jobs"}})
async def list_jobs(
    namespace: MayList,
    backend: BackendDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="page size")] = 100,
    continue_: Annotated[
        str,
        Query(
            alias="continue",
            max_length=4096,
            pattern=r"^[A-Za-z0-9+/=_.-]*$",
            description="metadata.continue of the previous page",
        ),
    ] = "",
) -> Response:
    """Jobs of a namespace by name, a page at a time."""
    with http_errors():
        page = await backend.list(namespace, limit, continue_)
    return _json(page if isinstance(page, str) else page.model_dump_json(by_alias=True))


@router.get("/{name}", responses={200: _JOB})
async def get_job(namespace: MayGet, name: NamePath, backend: BackendDep) -> Response:
    """One job with its status."""
    with http_errors():
        return _json(await backend.get(namespace, name))


@router.delete("/{name}", responses={200: _JOB})
async def delete_job(namespace: MayDelete, name: NamePath, backend: BackendDep) -> Response:
    """Delete a job: its workers are stopped (with the checkpoint grace period), then it goes."""
    with http_errors():
        return _json(await backend.delete(namespace, name))


@router.post("/{name}/suspend", responses={200: _JOB})
async def suspend_job(namespace: MayPatch, name: NamePath, backend: BackendDep) -> Response:
    """Stop the workers after a checkpoint; the job keeps its place and its progress."""
    with http_errors():
        return _json(await backend.set_suspend(namespace, name, True))


@router.post("/{name}/resume", responses={200: _JOB})
async def resume_job(namespace: MayPatch, name: NamePath, backend: BackendDep) -> Response:
    """Start a suspended job's workers again, from its newest checkpoint."""
    with http_errors():
        return _json(await backend.set_suspend(namespace, name, False))


@router.get("/{name}/metrics", response_model=MetricSeries)
async def job_metrics(
    namespace: MayGet,
    name: NamePath,
    backend: BackendDep,
    start: Annotated[float | None, Query(ge=0, le=1e11, description="epoch seconds")] = None,
    end: Annotated[float | None, Query(ge=0, le=1e11, description="epoch seconds")] = None,
) -> MetricSeries:
    """Step, loss and tokens/s over time (PromQL when Prometheus is configured)."""
    with http_errors():
        return await backend.series(namespace, name, start, end)


@router.get("/{name}/events", response_model=EventList)
async def job_events(namespace: MayReadEvents, name: NamePath, backend: BackendDep) -> EventList:
    """What happened to the job, oldest first."""
    with http_errors():
        return await backend.events(namespace, name)


@router.get(
    "/{name}/workers/{index}/log",
    response_class=PlainTextResponse,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "the log's last lines",
        },
        **{
            code: {**spec, "content": {"application/json": {}}}
            for code, spec in ERROR_RESPONSES.items()
        },
    },
)
async def worker_log(
    namespace: MayReadLogs,
    name: NamePath,
    index: Annotated[int, Path(ge=0, le=4095, description="worker index (rank)")],
    backend: BackendDep,
    settings: SettingsDep,
    tail: Annotated[int, Query(ge=1, le=100_000, description="lines")] = 100,
    restart: Annotated[
        int | None, Query(ge=0, description="the generation (status.restarts) to read")
    ] = None,
) -> PlainTextResponse:
    """The last `tail` lines of one worker's log.

    Without `restart`: on a cluster, the current generation's pod (the last failed one's
    while the new gang is not yet created); on the embedded platform, the worker's whole log,
    every generation after a `--- carina: worker <i>, restart <r>` line. With `restart`: that
    generation only; a cluster keeps the pods of the current and the last failed generation,
    404 for any other.
    """
    with http_errors():
        text = await backend.log_tail(
            namespace, name, index, min(tail, settings.max_log_lines), restart
        )
    return PlainTextResponse(text)
