"""Response bodies of the control plane other than the TrainingJob itself."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from carina.platform.api.types import TrainingJob


class Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class FieldErrorOut(Body):
    path: str = Field(description="dotted path into the manifest, camelCase")
    rule: str = Field(description="the rule it breaks")


class ErrorDetail(Body):
    reason: str = Field(description="NotFound, AlreadyExists, Invalid, Forbidden, ...")
    message: str
    errors: list[FieldErrorOut] = Field(default_factory=list)


class ErrorResponse(Body):
    detail: ErrorDetail


class ListMeta(Body):
    continue_: str | None = Field(
        None, alias="continue", description="pass as ?continue= for the next page"
    )


class JobList(Body):
    api_version: str = "carina.dev/v1alpha1"
    kind: str = "TrainingJobList"
    metadata: ListMeta = Field(default_factory=ListMeta)
    items: list[TrainingJob]


class Point(Body):
    time: float = Field(description="seconds since the epoch")
    value: float


class MetricSeries(Body):
    source: str = Field(description="'prometheus', 'local' (the embedded store) or 'none'")
    step: list[Point] = Field(default_factory=list)
    loss: list[Point] = Field(default_factory=list)
    tokens_per_second: list[Point] = Field(default_factory=list)


class EventOut(Body):
    time: datetime
    type: str = Field(description="Normal or Warning")
    reason: str
    message: str


class EventList(Body):
    items: list[EventOut]


class Health(Body):
    status: str


# ---------------------------------------------------------------- queues


class QueueResource(Body):
    """One resource of a ClusterQueue, in its base unit (GPUs, cores, bytes, pods)."""

    name: str = Field(description="nvidia.com/gpu, rdma/rdma_shared_device_ib, cpu, memory or pods")
    nominal: float = Field(description="the quota its jobs may always hold")
    reserved: float = Field(0, description="held by admitted jobs (victims until they leave)")
    borrowed: float = Field(0, description="of `reserved`, the part borrowed from the cohort")
    borrowing_limit: float | None = Field(None, description="unset: no limit")
    lending_limit: float | None = Field(None, description="unset: all of its unused quota")


class PendingJob(Body):
    """A job waiting for quota in a ClusterQueue, and why."""

    namespace: str
    name: str
    local_queue: str | None = None
    priority: int = 0
    reason: str | None = Field(None, description="WaitingForQuota, ExceedsMaxQuota, ...")
    message: str = ""
    position: int | None = Field(None, description="1 = next in its ClusterQueue")
    estimated_start: datetime | None = None
    created: datetime | None = None


class ClusterQueueSummary(Body):
    name: str
    cohort: str | None = None
    strategy: str = Field(description="StrictFIFO or BestEffortFIFO")
    stop_policy: str = "None"
    resources: list[QueueResource] = Field(default_factory=list)
    admitted_jobs: int = 0
    pending_jobs: int = Field(0, description="every pending job, also those not listed")


class ClusterQueueDetail(ClusterQueueSummary):
    pending: list[PendingJob] = Field(
        default_factory=list,
        description="pending jobs in queue order, of the namespaces the caller may list",
    )


class ClusterQueueList(Body):
    items: list[ClusterQueueSummary]


class LocalQueueOut(Body):
    namespace: str
    name: str
    cluster_queue: str
    stop_policy: str = "None"
    pending_jobs: int = 0
    admitted_jobs: int = 0


class LocalQueueList(Body):
    items: list[LocalQueueOut]
