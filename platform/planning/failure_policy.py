"""The failure policy: from a job, its status and its workers, the one next action.

Rules, in order (each a clause of `next_action`):
1. A finished job only cleans up: it stops workers still running after a failure and is
   deleted once `ttlSecondsAfterFinished` has passed.
2. Past `activeDeadlineSeconds` (counted from startTime, reset by suspension as in batch/v1
   Job) the job fails with DeadlineExceeded.
3. `spec.suspend` stops every worker.
4. A failed worker of the current generation: a permanent exit code fails the job at once;
   otherwise the whole gang restarts, the restart counted by whose fault it was (node failure
   and eviction: infrastructure; exit 75 or scheduler preemption: preemption; any other
   retryable exit: application). Only application restarts consume `maxRestarts` and back
   off (backoffSeconds doubling up to maxBackoffSeconds): a lost node is not the user's fault,
   and waiting does not bring it back sooner.
5. Workers of an older generation are stopped before any of the new one starts (stable pod
   names; a torch gang cannot mix generations).
6. All workers succeeded: the job succeeded.
7. Missing workers are created, after the restart backoff; a worker that vanished from a
   running gang is an eviction and restarts the gang.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from carina.platform.api import FINISHED_PHASES, Phase, TrainingJob, TrainingJobStatus
from carina.platform.planning.actions import (
    Action,
    CreateWorkers,
    DeleteJob,
    FailJob,
    Nothing,
    RestartGang,
    SucceedJob,
    SuspendWorkers,
    Wait,
)
from carina.platform.planning.observed import ObservedWorker
from carina.platform.reasons import ConditionType, Reason
from carina.workloads.config import ExitCode

__all__ = [
    "Action",
    "CreateWorkers",
    "DeleteJob",
    "FailJob",
    "Nothing",
    "RestartGang",
    "SucceedJob",
    "SuspendWorkers",
    "Wait",
    "classify_failure",
    "next_action",
    "restart_backoff",
]

# ObservedWorker.reason values that mean the worker's node failed or was lost.
NODE_FAILURE_REASONS = frozenset(
    {"NodeLost", "NodeFailure", "NodeShutdown", "UnexpectedAdmissionError"}
)
# ... that the worker was evicted (kubelet pressure, the eviction API, a drain).
EVICTION_REASONS = frozenset({"Evicted", "Deleted"})
PREEMPTION_REASONS = frozenset({"Preempted"})

# When two workers fail for different reasons in one reconcile, the more fundamental one
# names the restart: a lost node makes the other ranks' NCCL calls fail too.
_PRECEDENCE = (
    Reason.PERMANENT_EXIT_CODE,
    Reason.NODE_FAILURE,
    Reason.EVICTED,
    Reason.PREEMPTED,
    Reason.WORKER_FAILED,
)


def classify_failure(worker: ObservedWorker, permanent_codes: Sequence[int]) -> Reason | None:
    """Why this worker failed (a Reason), or None when it has not failed."""
    if worker.phase == "Failed":
        if worker.exit_code is not None and worker.exit_code in permanent_codes:
            return Reason.PERMANENT_EXIT_CODE
        if worker.reason in NODE_FAILURE_REASONS:
            return Reason.NODE_FAILURE
        if worker.reason in EVICTION_REASONS:
            return Reason.EVICTED
        if worker.exit_code == ExitCode.PREEMPTED or worker.reason in PREEMPTION_REASONS:
            return Reason.PREEMPTED
        return Reason.WORKER_FAILED
    if worker.phase == "Unknown":
        return Reason.NODE_FAILURE
    if worker.deleting and worker.phase != "Succeeded":
        # Someone else is deleting a live worker of the current generation.
        if worker.reason in NODE_FAILURE_REASONS:
            return Reason.NODE_FAILURE
        if worker.reason in PREEMPTION_REASONS:
            return Reason.PREEMPTED
        return Reason.EVICTED
    return None


def _describe(worker: ObservedWorker, reason: Reason) -> str:
    if worker.phase == "Failed" and worker.exit_code is not None:
        what = f"worker {worker.index} exited with code {worker.exit_code}"
        if reason == Reason.PERMANENT_EXIT_CODE:
            if worker.exit_code in ExitCode._value2member_map_:
                what += f" ({ExitCode(worker.exit_code).name})"
            return what + ", which is permanent"
        return what
    where = f" on node {worker.node}" if worker.node else ""
    return f"worker {worker.index}{where}: {worker.reason or reason.value}"


def restart_backoff(job: TrainingJob, application_restarts: int) -> timedelta:
    """Delay before the n-th application restart: backoffSeconds doubling, capped."""
    policy = job.spec.failure_policy
    if application_restarts < 1:
        return timedelta(0)
    seconds = policy.backoff_seconds * 2 ** min(application_restarts - 1, 30)
    return timedelta(seconds=min(seconds, policy.max_backoff_seconds))


def deadline(job: TrainingJob, status: TrainingJobStatus) -> datetime | None:
    """When activeDeadlineSeconds runs out, or None."""
    if job.spec.active_deadline_seconds is None or status.start_time is None:
        return None
    return status.start_time + timedelta(seconds=job.spec.active_deadline_seconds)


def _current(
    status: TrainingJobStatus, workers: Sequence[ObservedWorker]
) -> dict[int, ObservedWorker]:
    return {w.index: w for w in workers if w.restart == status.restarts}


def _finished(
    job: TrainingJob, status: TrainingJobStatus, workers: Sequence[ObservedWorker], now: datetime
) -> Action:
    if status.phase == Phase.FAILED and any(w.active for w in workers):
        cond = next((c for c in status.conditions if c.type == ConditionType.FAILED), None)
        reason = Reason(cond.reason) if cond else Reason.WORKER_FAILED
        return FailJob(reason, cond.message if cond else "")
    ttl = job.spec.ttl_seconds_after_finished
    if ttl is None or status.completion_time is None:
        return Nothing()
    expiry = status.completion_time + timedelta(seconds=ttl)
    return DeleteJob() if now >= expiry else Wait(expiry)


def _restart_or_fail(
    job: TrainingJob, status: TrainingJobStatus, reason: Reason, message: str, now: datetime
) -> Action:
    if reason == Reason.PERMANENT_EXIT_CODE:
        return FailJob(reason, message)
    if reason == Reason.WORKER_FAILED:
        used = status.restarts_by_reason.application
        limit = job.spec.failure_policy.max_restarts
        if used >= limit:
            return FailJob(
                Reason.MAX_RESTARTS_EXCEEDED,
                f"{message}; {used} application restarts used, maxRestarts is {limit}",
            )
        delay = restart_backoff(job, used + 1)
        not_before = now + delay if delay else None
    else:
        not_before = None
    return RestartGang(reason, status.restarts + 1, not_before, message)


def next_action(
    job: TrainingJob,
    status: TrainingJobStatus,
    workers: Sequence[ObservedWorker],
    now: datetime,
) -> Action:
    """The one next step for this job (see the module docstring for the rules)."""
    if status.phase in FINISHED_PHASES:
        return _finished(job, status, workers, now)

    ends = deadline(job, status)
    if ends is not None and now >= ends and not job.spec.suspend:
        return FailJob(
            Reason.DEADLINE_EXCEEDED,
            f"the job ran longer than activeDeadlineSeconds={job.spec.active_deadline_seconds}",
        )

    if job.spec.suspend:
        return SuspendWorkers() if any(not w.deleting for w in workers) else Nothing()

    replicas = job.spec.replicas
    current = _current(status, workers)
    permanent = job.spec.failure_policy.permanent_exit_codes
    failures = [
        (r, w) for w in current.values() if (r := classify_failure(w, permanent)) is not None
    ]
    if failures:
        reason, worker = min(failures, key=lambda f: (_PRECEDENCE.index(f[0]), f[1].index))
        return _restart_or_fail(job, status, reason, _describe(worker, reason), now)

    # Older generations, and workers beyond a shrunk spec.replicas, are stopped.
    stale = [w for w in workers if w.restart != status.restarts or w.index >= replicas]
    if stale:
        if all(w.deleting for w in stale):
            return Wait(None)
        cond = next((c for c in status.conditions if c.type == ConditionType.RESTARTING), None)
        reason = Reason(cond.reason) if cond and cond.status == "True" else Reason.WORKER_FAILED
        return RestartGang(reason, status.restarts, status.restart_not_before)

    in_range = {i: w for i, w in current.items() if i < replicas}
    if len(in_range) == replicas and all(w.phase == "Succeeded" for w in in_range.values()):
        return SucceedJob()

    missing = tuple(i for i in range(replicas) if i not in current)
    if missing:
        if status.phase == Phase.RUNNING:
            return _restart_or_fail(
                job, status, Reason.EVICTED, f"worker {missing[0]} disappeared", now
            )
        if status.restart_not_before is not None and now < status.restart_not_before:
            return Wait(status.restart_not_before)
        return CreateWorkers(missing, status.restarts)

    return Wait(ends) if ends is not None else Nothing()
