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
   and waiting does not bring it back sooner. A stalled gang's restart (`stall.py`, decided by
   the engine through `restart_or_fail`) is an application restart too.
5. Workers of an older generation are stopped before any of the new one starts (a torch gang
   cannot mix generations). Only those that may still run block the new gang: the finished
   workers of the generation that just failed are kept (`kept`), so their logs and termination
   messages explain the restart, until the next restart or the job's deletion; finished
   workers of any older generation are deleted with the next restart (`superseded`).
6. All workers succeeded: the job succeeded.
7. Missing workers are created, after the restart backoff; a worker that vanished from a
   running gang is an eviction and restarts the gang.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from carina.platform.api.reasons import APPLICATION_REASONS, ConditionType, Reason
from carina.platform.api.types import FINISHED_PHASES, Phase, TrainingJob, TrainingJobStatus
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
from carina.workloads.config import ExitCode
from carina.workloads.contract import TerminationMessage

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
    "blocks_new_gang",
    "classify_failure",
    "kept",
    "next_action",
    "restart_backoff",
    "restart_or_fail",
    "superseded",
]

# ObservedWorker.reason values that mean the worker's node failed or was lost.
NODE_FAILURE_REASONS = frozenset(
    {"NodeLost", "NodeFailure", "NodeShutdown", "UnexpectedAdmissionError"}
)
# ... that the worker was evicted (kubelet pressure, the eviction API, a drain).
EVICTION_REASONS = frozenset({"Evicted", "Deleted"})
PREEMPTION_REASONS = frozenset({"Preempted"})

# How long a gang waits on the deletion of older workers before it looks again on its own.
STALE_RECHECK = timedelta(seconds=10)

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


# The log lines a failure message quotes, and their length: an event keeps 1,024 characters.
LOG_LINES = 5
LOG_WIDTH = 600


def _describe(worker: ObservedWorker, reason: Reason) -> tuple[str, str]:
    """What happened to the worker, and the last lines its failing rank logged ("" if none)."""
    said = TerminationMessage.parse(worker.termination_message)
    lines = said.last_lines(LOG_LINES, LOG_WIDTH) if said else ""
    if worker.phase == "Failed" and worker.exit_code is not None:
        rank = f" (rank {said.rank})" if said and said.rank is not None else ""
        what = f"worker {worker.index}{rank} exited with code {worker.exit_code}"
        if reason == Reason.PERMANENT_EXIT_CODE:
            if worker.exit_code in ExitCode._value2member_map_:
                what += f" ({ExitCode(worker.exit_code).name})"
            what += ", which is permanent"
        return what, lines
    where = f" on node {worker.node}" if worker.node else ""
    return f"worker {worker.index}{where}: {worker.reason or reason.value}", lines


def _message(what: str, lines: str) -> str:
    return f"{what}: {lines}" if lines else what


def kept(worker: ObservedWorker, generation: int) -> bool:
    """A finished worker of the generation before `generation`: kept to explain the restart."""
    return worker.finished and worker.restart == generation - 1


def superseded(worker: ObservedWorker, generation: int, replicas: int) -> bool:
    """Not part of the gang of `generation` (older, or beyond spec.replicas), nor kept."""
    outside = worker.restart != generation or worker.index >= replicas
    return outside and not kept(worker, generation)


def blocks_new_gang(worker: ObservedWorker, generation: int, replicas: int) -> bool:
    """A superseded worker that may still run: the gang of `generation` waits until it is gone."""
    return superseded(worker, generation, replicas) and not worker.finished


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


def restart_or_fail(
    job: TrainingJob,
    status: TrainingJobStatus,
    reason: Reason,
    what: str,
    now: datetime,
    lines: str = "",
) -> Action:
    """Restart the gang, or fail the job; the message ends with the failing rank's log lines.

    An application restart (a retryable exit, a stall) consumes `maxRestarts` and backs off.
    """
    if reason == Reason.PERMANENT_EXIT_CODE:
        return FailJob(reason, _message(what, lines))
    if reason in APPLICATION_REASONS:
        used = status.restarts_by_reason.application
        limit = job.spec.failure_policy.max_restarts
        if used >= limit:
            return FailJob(
                Reason.MAX_RESTARTS_EXCEEDED,
                _message(
                    f"{what}; {used} application restarts used, maxRestarts is {limit}", lines
                ),
            )
        delay = restart_backoff(job, used + 1)
        not_before = now + delay if delay else None
    else:
        not_before = None
    return RestartGang(reason, status.restarts + 1, not_before, _message(what, lines))


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
        stopping = any(not w.deleting and not kept(w, status.restarts) for w in workers)
        return SuspendWorkers() if stopping else Nothing()

    replicas = job.spec.replicas
    current = _current(status, workers)
    permanent = job.spec.failure_policy.permanent_exit_codes
    failures = [
        (r, w) for w in current.values() if (r := classify_failure(w, permanent)) is not None
    ]
    if failures:
        reason, worker = min(failures, key=lambda f: (_PRECEDENCE.index(f[0]), f[1].index))
        what, lines = _describe(worker, reason)
        return restart_or_fail(job, status, reason, what, now, lines)

    # Older generations, and workers beyond a shrunk spec.replicas, are stopped; finished ones
    # hold nothing and wait for the next restart (or the job's deletion) to be deleted.
    stale = [w for w in workers if blocks_new_gang(w, status.restarts, replicas)]
    if stale:
        if all(w.deleting for w in stale):
            # Their deletion's last event brings the next look; look again anyway after a
            # while, so an event a substrate missed (a restart of the operator between the
            # list and the watch) cannot hold the gang forever.
            return Wait(now + STALE_RECHECK)
        cond = next((c for c in status.conditions if c.type == ConditionType.RESTARTING), None)
        reason = Reason(cond.reason) if cond and cond.status == "True" else Reason.WORKER_FAILED
        return RestartGang(reason, status.restarts, status.restart_not_before)

    in_range = {i: w for i, w in current.items() if i < replicas}
    if len(in_range) == replicas and all(w.phase == "Succeeded" for w in in_range.values()):
        return SucceedJob()

    missing = tuple(i for i in range(replicas) if i not in current)
    if missing:
        if status.phase == Phase.RUNNING:
            return restart_or_fail(
                job, status, Reason.EVICTED, f"worker {missing[0]} disappeared", now
            )
        if status.restart_not_before is not None and now < status.restart_not_before:
            return Wait(status.restart_not_before)
        return CreateWorkers(missing, status.restarts)

    return Wait(ends) if ends is not None else Nothing()
