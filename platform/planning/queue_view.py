"""Between the API objects and the admission function: reading queues and jobs, writing back.

`queueing.schedule` works on small values (QueueInfo, JobInfo); this module builds them from
ClusterQueues, LocalQueues, priority classes and TrainingJobs, folds the decisions back into
each job's `status.queueing` (the sub-tree only the admission writer writes, with its own
conditions), and tells the lifecycle engine what that sub-tree means for the job's workers
(`job_admission`). Both substrates use it: the operator's admission writer with the cluster's
queues, the embedded platform with one implicit queue the size of its machine.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta

from carina.platform.api.quantity import parse_quantity
from carina.platform.api.queues import (
    CPU,
    GPU,
    MEMORY,
    PODS,
    RDMA,
    ClusterQueue,
    LocalQueue,
    QueueingStrategy,
    ReclaimWithinCohort,
    StopPolicy,
    WithinClusterQueue,
)
from carina.platform.api.reasons import QueueConditionType, QueueReason
from carina.platform.api.types import (
    FINISHED_PHASES,
    Condition,
    EvictionStatus,
    QueueingStatus,
    QuotaAdmission,
    RequeueState,
    TrainingJob,
)
from carina.platform.planning.engine import ADMITTED, JobAdmission
from carina.platform.planning.profiles import profile_for
from carina.platform.planning.queueing import Book, Decisions, Held, JobInfo, QueueInfo, Quota

# What a queue that names no quota for them does not limit (GPUs it does).
_UNLIMITED = frozenset({CPU, MEMORY, PODS, RDMA})

# Waiting for these, no amount of other jobs finishing admits the job: it is Pending, not Queued.
_NEVER = frozenset(
    {QueueReason.MISCONFIGURED, QueueReason.EXCEEDS_MAX_QUOTA, QueueReason.DEACTIVATED}
)


def _ts(when: datetime | None) -> float:
    return when.timestamp() if when is not None else 0.0


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# ---------------------------------------------------------------- reading


def queue_info(cq: ClusterQueue) -> QueueInfo:
    """A ClusterQueue as the admission function reads it."""
    s = cq.spec
    quotas: dict[str, Quota] = {
        r.name: Quota(
            parse_quantity(r.nominal_quota),
            None if r.borrowing_limit is None else parse_quantity(r.borrowing_limit),
            None if r.lending_limit is None else parse_quantity(r.lending_limit),
        )
        for r in s.resources
    }
    return QueueInfo(
        name=cq.metadata.name,
        quotas=quotas,
        cohort=s.cohort,
        strict_fifo=s.queueing_strategy == QueueingStrategy.STRICT_FIFO,
        within=WithinClusterQueue(s.preemption.within_cluster_queue),
        reclaim=ReclaimWithinCohort(s.preemption.reclaim_within_cohort),
        stop=StopPolicy(s.stop_policy),
        pods_ready_timeout=float(s.pods_ready.timeout_seconds),
        backoff_base=float(s.pods_ready.backoff_base_seconds),
        backoff_max=float(s.pods_ready.backoff_max_seconds),
        backoff_limit=s.pods_ready.backoff_limit_count,
    )


def machine_queue(
    cpus: float, memory_bytes: float, gpus: int, name: str = "this-machine"
) -> QueueInfo:
    """The embedded platform's one implicit queue: the machine, first come first served.

    StrictFIFO, so a big job is never starved by a stream of small ones behind it; a higher
    priority preempts a lower one, which saves a checkpoint first.
    """
    return QueueInfo(
        name=name,
        quotas={CPU: Quota(cpus), MEMORY: Quota(memory_bytes), GPU: Quota(float(gpus))},
        strict_fifo=True,
        within=WithinClusterQueue.LOWER_PRIORITY,
        pods_ready_timeout=None,
    )


def gang_usage(job: TrainingJob) -> dict[str, float]:
    """What the whole gang asks for; ValueError naming a field it cannot count."""
    r, n = job.spec.resources, job.spec.replicas
    usage = {
        CPU: n * _quantity(r.cpu, "spec.resources.cpu"),
        MEMORY: n * _quantity(r.memory, "spec.resources.memory"),
        PODS: float(n),
    }
    if r.gpus:
        usage[GPU] = float(n * r.gpus)
    # What the cluster profile adds to every worker (Blue Vela: an RDMA device).
    for name, amount in profile_for(job.spec.cluster).extra_resources.items():
        usage[name] = usage.get(name, 0.0) + n * parse_quantity(amount)
    return usage


def _quantity(value: int | str, path: str) -> float:
    try:
        return parse_quantity(value)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def priority_of(job: TrainingJob, classes: Mapping[str, int]) -> tuple[int, str | None]:
    """The job's priority, and what is wrong when its priority class does not exist."""
    name = job.spec.priority_class_name
    if name is None:
        return job.spec.priority, None
    if name not in classes:
        return job.spec.priority, f"TrainingPriorityClass {name} does not exist"
    return classes[name], None


def resolve(
    job: TrainingJob,
    local_queues: Mapping[tuple[str, str], LocalQueue],
    cluster_queues: Mapping[str, ClusterQueue],
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> tuple[str | None, str | None, bool]:
    """(ClusterQueue name, what is misconfigured, whether its LocalQueue is held)."""
    ns = job.metadata.namespace or "default"
    name = job.spec.queue
    if name is None:
        return None, "spec.queue names no LocalQueue", False
    lq = local_queues.get((ns, name))
    if lq is None:
        return None, f"LocalQueue {ns}/{name} does not exist", False
    cq = cluster_queues.get(lq.spec.cluster_queue)
    if cq is None:
        return (
            None,
            f"ClusterQueue {lq.spec.cluster_queue} (of LocalQueue {name}) does not exist",
            False,
        )
    if not cq.spec.namespace_selector.matches(dict(namespace_labels.get(ns, {}))):
        return None, f"ClusterQueue {cq.metadata.name} does not admit jobs of namespace {ns}", False
    return cq.metadata.name, None, lq.spec.stop_policy != StopPolicy.NONE


def job_info(
    job: TrainingJob,
    key: str,
    *,
    queue: str | None,
    priority: int,
    misconfigured: str | None = None,
    local_stopped: bool = False,
    workers_gone: bool,
    covered: Collection[str] | None = None,
) -> JobInfo:
    """The job as the admission function reads it, from its spec and `status.queueing`.

    `covered` names the resources its queue has quota for: CPU, memory, pods and RDMA devices
    a queue does not name are not limited by it (a GPU queue need not count cores); GPUs it
    does not name are (a GPU job never runs on a CPU team's quota).
    """
    status = job.status
    q = status.queueing if status else None
    held = None
    if q is not None and q.admission is not None:
        held = Held(
            q.admission.cluster_queue,
            dict(q.admission.usage),
            _ts(q.admission.admitted_at),
            q.admission.borrowing,
        )
    try:
        demand = gang_usage(job)
    except ValueError as exc:
        demand, misconfigured = {}, misconfigured or str(exc)
    if covered is not None:
        demand = {r: v for r, v in demand.items() if r in covered or r not in _UNLIMITED}
    requeue_at = q.requeue.requeue_at if q is not None else None
    timestamp = max(_ts(job.metadata.creation_timestamp), _ts(requeue_at))
    ready = status is not None and status.workers.ready >= job.spec.replicas
    # Ready since admission, even if not now (a restart): the pods-ready timeout is for the
    # first start only. Running turned True, or turned False again, after the admission.
    was_ready = ready
    if status is not None and held is not None:
        running = next((c for c in status.conditions if c.type == "Running"), None)
        was_ready = was_ready or (
            running is not None
            and (running.status == "True" or _ts(running.last_transition_time) > held.admitted_at)
        )
    if q is not None and q.eviction is not None and status is not None:
        # Released only once the lifecycle engine has recorded how the victim left (its
        # checkpoint acknowledged, or not): its workers' last word must not be lost.
        told = next((c for c in status.conditions if c.type == "Checkpointed"), None)
        workers_gone = workers_gone and (
            told is not None and told.last_transition_time >= q.eviction.requested_at
        )
    return JobInfo(
        key=key,
        queue=queue,
        demand=demand,
        priority=priority,
        timestamp=timestamp,
        misconfigured=misconfigured,
        active=q.active if q is not None else True,
        held=held,
        evicting=q.eviction.reason if q is not None and q.eviction is not None else None,
        evicted_for=q.eviction.preemptor if q is not None and q.eviction is not None else None,
        workers_gone=workers_gone,
        all_ready=ready,
        was_ready=was_ready,
        requeue_count=q.requeue.count if q is not None else 0,
        requeue_at=_ts(requeue_at) if requeue_at is not None else None,
        min_runtime=float(job.spec.preemption.min_runtime_seconds),
        last_checkpoint_at=(
            _ts(status.last_checkpoint.time)
            if status and status.last_checkpoint and status.last_checkpoint.time
            else None
        ),
        local_stopped=local_stopped,
    )


# ---------------------------------------------------------------- writing back


def _put(
    conditions: list[Condition], type_: str, value: bool, reason: str, message: str, now: datetime
) -> None:
    wanted = "True" if value else "False"
    for i, c in enumerate(conditions):
        if c.type == type_:
            if (c.status, c.reason, c.message) != (wanted, reason, message):
                conditions[i] = Condition(
                    type=type_,
                    status=wanted,
                    reason=reason,
                    message=message,
                    last_transition_time=now if c.status != wanted else c.last_transition_time,
                )
            return
    conditions.append(
        Condition(
            type=type_, status=wanted, reason=reason, message=message, last_transition_time=now
        )
    )


def _drop(conditions: list[Condition], type_: str) -> None:
    conditions[:] = [c for c in conditions if c.type != type_]


def next_queueing(
    job: TrainingJob,
    key: str,
    decisions: Decisions,
    now: datetime,
    *,
    local_queue: str | None,
    cluster_queue: str | None,
    priority: int,
    grace_seconds: float,
    estimated_start: datetime | None = None,
) -> QueueingStatus:
    """The job's `status.queueing` after this round of decisions."""
    previous = job.status.queueing if job.status else None
    q = previous.model_copy(deep=True) if previous else QueueingStatus()
    q.local_queue, q.priority = local_queue, priority
    if q.admission is None:
        q.cluster_queue = cluster_queue
    conds = q.conditions

    released = decisions.release.get(key)
    done = job.status is not None and job.status.phase in FINISHED_PHASES
    if released is not None and (done or job.spec.suspend):
        # Its quota goes back because it finished or was suspended: nothing to wait for.
        why = f"{job.status.phase}" if done and job.status else "Suspended"
        q.admission, q.eviction, q.requeue, q.active = None, None, RequeueState(), True
        q.reason, q.position, q.estimated_start = None, None, None
        q.message = f"{why.lower()}: its quota is released"
        _put(conds, QueueConditionType.QUOTA_RESERVED, False, why, q.message, now)
        _drop(conds, QueueConditionType.REQUEUED)
        return q
    if released is not None:
        q.admission, q.eviction = None, None
        q.requeue = RequeueState(
            count=released.requeue_count,
            requeue_at=_at(released.requeue_at) if released.requeue_at is not None else None,
        )
        q.active = not released.deactivated
        _put(
            conds,
            QueueConditionType.QUOTA_RESERVED,
            False,
            QueueReason.REQUEUED,
            released.message,
            now,
        )
        _put(conds, QueueConditionType.REQUEUED, True, QueueReason.REQUEUED, released.message, now)
        q.cluster_queue = cluster_queue

    admitted = decisions.admit.get(key)
    evicted = decisions.evict.get(key)
    pending = decisions.pending.get(key)
    if admitted is not None:
        q.admission = QuotaAdmission(
            cluster_queue=admitted.queue,
            usage=dict(admitted.usage),
            borrowing=admitted.borrowing,
            admitted_at=now,
        )
        q.cluster_queue = admitted.queue
        q.reason = QueueReason.QUOTA_RESERVED
        q.message = f"admitted to ClusterQueue {admitted.queue}" + (
            " (borrowing from its cohort)" if admitted.borrowing else ""
        )
        q.position = None
        q.estimated_start = None
        _put(
            conds,
            QueueConditionType.QUOTA_RESERVED,
            True,
            QueueReason.QUOTA_RESERVED,
            q.message,
            now,
        )
        for t in (
            QueueConditionType.EVICTED,
            QueueConditionType.PREEMPTED,
            QueueConditionType.REQUEUED,
        ):
            _drop(conds, t)
    elif evicted is not None:
        q.eviction = EvictionStatus(
            reason=evicted.reason,
            detail=evicted.detail,
            requested_at=now,
            deadline=now + timedelta(seconds=grace_seconds),
            preemptor=evicted.preemptor,
            message=evicted.message,
        )
        q.reason, q.message = evicted.reason, evicted.message
        _put(conds, QueueConditionType.EVICTED, True, evicted.reason, evicted.message, now)
        if evicted.detail is not None:
            _put(conds, QueueConditionType.PREEMPTED, True, evicted.detail, evicted.message, now)
    elif pending is not None:
        q.reason, q.message, q.position = pending.reason, pending.message, pending.position
        q.estimated_start = estimated_start
        if q.admission is None:
            _put(
                conds,
                QueueConditionType.QUOTA_RESERVED,
                False,
                pending.reason,
                pending.message,
                now,
            )
    elif q.admission is not None and q.eviction is None and done:
        q.reason, q.message = None, "finished; its quota is released once its workers are gone"
    elif q.admission is not None and q.eviction is None:
        ready = job.status is not None and job.status.workers.ready >= job.spec.replicas
        reason = QueueReason.QUOTA_RESERVED if ready else QueueReason.WAITING_FOR_PODS_READY
        if q.reason != reason:
            q.reason = reason
            q.message = (
                f"admitted to ClusterQueue {q.admission.cluster_queue}"
                if ready
                else f"admitted; waiting for all {job.spec.replicas} workers to be ready"
            )
    return q


def job_admission(job: TrainingJob, managed: bool) -> JobAdmission:
    """What `status.queueing` means for the job's workers, as the lifecycle engine takes it.

    An unmanaged job (on a cluster, one that names no queue) is admitted as it stands. A
    managed one has workers only while it holds quota; while its eviction is in flight its
    workers save a checkpoint and leave.
    """
    if not managed:
        return ADMITTED
    q = job.status.queueing if job.status else None
    if q is None:
        return JobAdmission(
            False, "waiting for the first admission decision", reason=QueueReason.PENDING_EVALUATION
        )
    if q.eviction is not None:
        return JobAdmission(
            False,
            q.eviction.message,
            reason=q.eviction.reason,
            evicting=True,
            eviction_requested_at=q.eviction.requested_at,
        )
    if q.admission is not None:
        return JobAdmission(True, q.message or "admitted", reason=QueueReason.QUOTA_RESERVED)
    reason = q.reason or QueueReason.PENDING_EVALUATION
    return JobAdmission(
        False, q.message or "waiting for quota", never_fits=reason in _NEVER, reason=reason
    )


# ---------------------------------------------------------------- when a waiting job starts


def eta(job: TrainingJob) -> datetime | None:
    """When a running job will finish, from its progress: the steps left at its pace so far."""
    status = job.status
    p = status.progress if status else None
    if status is None or p is None or not p.total_steps or not p.step or status.start_time is None:
        return None
    seen = p.updated_at or status.start_time
    elapsed = (seen - status.start_time).total_seconds()
    if elapsed <= 0:
        return None
    rate = p.step / elapsed  # steps per second
    return seen + timedelta(seconds=max(0, p.total_steps - p.step) / rate)


def estimate_starts(
    queues: list[QueueInfo],
    jobs: list[JobInfo],
    decisions: Decisions,
    finishes: Mapping[str, datetime],
    now: datetime,
) -> dict[str, datetime]:
    """When each job waiting for quota would start, if the jobs holding quota finished when
    their progress says (`finishes`: key -> ETA) and nothing else arrived or was preempted.

    Jobs are freed in ETA order; each waiting job, in its queue's order, starts at the first
    moment its whole gang fits beside the jobs estimated to start before it. A job with no ETA
    to wait for (a holder without progress) gets no estimate.
    """
    book = Book({q.name: q for q in queues})
    holders: list[tuple[datetime, str, Mapping[str, float]]] = []
    for j in jobs:
        usage: Mapping[str, float] | None = None
        queue: str | None = None
        if j.key in decisions.admit:
            queue, usage = decisions.admit[j.key].queue, decisions.admit[j.key].usage
        elif j.held is not None and j.key not in decisions.release:
            queue, usage = j.held.queue, j.held.usage
        if queue is None or usage is None or queue not in book.queues:
            continue
        book.add(queue, usage)
        when = finishes.get(j.key)
        if when is not None:
            holders.append((max(when, now), queue, usage))
    holders.sort(key=lambda h: h[0])
    waiting = sorted(
        (
            j
            for j in jobs
            if j.queue in book.queues
            and (p := decisions.pending.get(j.key)) is not None
            and p.reason == QueueReason.WAITING_FOR_QUOTA
        ),
        key=lambda j: (-j.priority, j.timestamp, j.key),
    )
    out: dict[str, datetime] = {}
    freed = 0
    for j in waiting:
        assert j.queue is not None
        while not book.fits(j.queue, j.demand) and freed < len(holders):
            when, queue, usage = holders[freed]
            book.add(queue, usage, -1.0)
            freed += 1
        if not book.fits(j.queue, j.demand):
            break  # nothing known frees enough: no later job can be estimated either
        out[j.key] = holders[freed - 1][0] if freed else now
        book.add(j.queue, j.demand)  # it holds its quota from then on (no ETA of its own)
    return out
