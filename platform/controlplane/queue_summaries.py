"""What the queue routes show, built the same way by both backends.

A ClusterQueue's quota comes from its spec, its usage and counts from its status (written by
the admission writer); who waits, and why, from the jobs' `status.queueing` (also the
admission writer's). Every number is in the resource's base unit: GPUs, cores, bytes, pods.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from carina.platform.api.quantity import parse_quantity
from carina.platform.api.queues import ClusterQueue, QueueingStrategy, StopPolicy
from carina.platform.api.types import FINISHED_PHASES, QueueingStatus
from carina.platform.controlplane.schemas import (
    ClusterQueueSummary,
    LocalQueueOut,
    PendingJob,
    QueueResource,
)

DEFAULT_LOCAL_QUEUE = "default"  # how the embedded platform names a job's queue when it names none


@dataclass(frozen=True)
class QueuedJob:
    """A job as the queue routes read it: where it is, and its `status.queueing`."""

    namespace: str
    name: str
    spec_queue: str | None
    created: datetime | None
    finished: bool
    deleting: bool
    queueing: QueueingStatus | None

    @property
    def local_queue(self) -> str | None:
        if self.queueing is not None and self.queueing.local_queue:
            return self.queueing.local_queue
        return self.spec_queue

    @property
    def admitted(self) -> bool:
        """It holds quota (a victim too, until its workers are gone)."""
        return (
            not self.finished and self.queueing is not None and self.queueing.admission is not None
        )

    @property
    def pending(self) -> bool:
        """It waits for quota: not finished, not being deleted, holding none."""
        return (
            not self.finished
            and not self.deleting
            and self.queueing is not None
            and self.queueing.admission is None
        )

    def cluster_queue(self) -> str | None:
        """The ClusterQueue it holds quota in, or waits in."""
        q = self.queueing
        if q is None:
            return None
        return q.admission.cluster_queue if q.admission is not None else q.cluster_queue


def queued_job(obj: Mapping[str, Any], deleting: bool = False) -> QueuedJob:
    """A TrainingJob object (as the API serves it) as the queue routes read it."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    queueing = None
    raw = status.get("queueing")
    if isinstance(raw, dict):
        try:
            queueing = QueueingStatus.model_validate(raw)
        except ValidationError:
            queueing = None  # not the admission writer's: shown as not queued
    created = metadata.get("creationTimestamp")
    return QueuedJob(
        namespace=str(metadata.get("namespace") or "default"),
        name=str(metadata.get("name") or ""),
        spec_queue=spec.get("queue") if isinstance(spec.get("queue"), str) else None,
        created=_time(created),
        finished=status.get("phase") in FINISHED_PHASES,
        deleting=deleting or bool(metadata.get("deletionTimestamp")),
        queueing=queueing,
    )


def _time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def pending_jobs(jobs: Iterable[QueuedJob], cluster_queue: str | None) -> list[PendingJob]:
    """The jobs waiting in `cluster_queue` (None: in any), in queue order.

    Queue order is the admission writer's `position`; jobs without one (not yet placed, or
    waiting for a reason no other job's progress changes) follow, by priority, then age.
    """
    waiting = [
        j
        for j in jobs
        if j.pending and (cluster_queue is None or j.cluster_queue() == cluster_queue)
    ]
    out = []
    for j in waiting:
        q = j.queueing
        assert q is not None  # pending implies it
        out.append(
            PendingJob(
                namespace=j.namespace,
                name=j.name,
                local_queue=j.local_queue,
                priority=q.priority,
                reason=q.reason,
                message=q.message,
                position=q.position,
                estimated_start=q.estimated_start,
                created=j.created,
            )
        )
    return sorted(out, key=_queue_order)


def _queue_order(p: PendingJob) -> tuple[bool, int, int, float, str, str]:
    created = p.created.timestamp() if p.created is not None else 0.0
    return (p.position is None, p.position or 0, -p.priority, created, p.namespace, p.name)


def cluster_queue_summary(cq: ClusterQueue) -> ClusterQueueSummary:
    """A ClusterQueue's quota (spec), usage and counts (status)."""
    status = cq.status
    usage = {u.name: u for u in (status.resources if status is not None else [])}
    resources = []
    for r in cq.spec.resources:
        used = usage.get(r.name)
        resources.append(
            QueueResource(
                name=r.name,
                nominal=parse_quantity(r.nominal_quota),
                reserved=used.reserved if used is not None else 0.0,
                borrowed=used.borrowed if used is not None else 0.0,
                borrowing_limit=(
                    parse_quantity(r.borrowing_limit) if r.borrowing_limit is not None else None
                ),
                lending_limit=(
                    parse_quantity(r.lending_limit) if r.lending_limit is not None else None
                ),
            )
        )
    return ClusterQueueSummary(
        name=cq.metadata.name,
        cohort=cq.spec.cohort,
        strategy=QueueingStrategy(cq.spec.queueing_strategy).value,
        stop_policy=StopPolicy(cq.spec.stop_policy).value,
        resources=resources,
        admitted_jobs=status.admitted_jobs if status is not None else 0,
        pending_jobs=status.pending_jobs if status is not None else 0,
    )


def machine_queue_summary(
    name: str, nominal: Mapping[str, float], jobs: Iterable[QueuedJob]
) -> ClusterQueueSummary:
    """The embedded platform's one implicit ClusterQueue: the machine, with what its jobs hold.

    Every job on the machine waits in it, whatever LocalQueue it names.
    """
    jobs = list(jobs)
    reserved = dict.fromkeys(nominal, 0.0)
    for j in jobs:
        if j.admitted and j.queueing is not None and j.queueing.admission is not None:
            for resource, amount in j.queueing.admission.usage.items():
                if resource in reserved:
                    reserved[resource] += amount
    return ClusterQueueSummary(
        name=name,
        cohort=None,
        strategy=QueueingStrategy.STRICT_FIFO.value,
        resources=[
            QueueResource(name=r, nominal=nominal[r], reserved=reserved[r]) for r in nominal
        ],
        admitted_jobs=sum(1 for j in jobs if j.admitted),
        pending_jobs=sum(1 for j in jobs if j.pending),
    )


def local_queue_counts(
    jobs: Iterable[QueuedJob], default: str | None = None
) -> dict[str, tuple[int, int]]:
    """LocalQueue name -> (pending, admitted) among `jobs` (one namespace's).

    A job that names no LocalQueue counts under `default` (None: under none).
    """
    counts: dict[str, tuple[int, int]] = {}
    for j in jobs:
        name = j.local_queue or default
        if name is None or not (j.pending or j.admitted):
            continue
        pending, admitted = counts.get(name, (0, 0))
        counts[name] = (pending + j.pending, admitted + j.admitted)
    return counts


def local_queue_out(
    namespace: str,
    name: str,
    cluster_queue: str,
    counts: tuple[int, int],
    stop_policy: str = StopPolicy.NONE.value,
) -> LocalQueueOut:
    return LocalQueueOut(
        namespace=namespace,
        name=name,
        cluster_queue=cluster_queue,
        stop_policy=stop_policy,
        pending_jobs=counts[0],
        admitted_jobs=counts[1],
    )
