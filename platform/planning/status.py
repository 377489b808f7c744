"""Status derivation: one pure function from spec + observed workers to TrainingJobStatus.

`derive_status` reports what is: counts, phase, conditions, and what the workers' termination
messages say (the checkpoints they acknowledged, the step global rank 0 ended at); otherwise
status keeps the last known progress. `apply_action` folds the failure policy's decision into
it (a restart recorded, the job failed or succeeded). A substrate writes the result once per
reconcile, only when it changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from carina.platform.api.reasons import (
    APPLICATION_REASONS,
    INFRASTRUCTURE_REASONS,
    PREEMPTION_REASONS,
    ConditionType,
    Reason,
)
from carina.platform.api.types import (
    FINISHED_PHASES,
    Condition,
    Phase,
    TrainingJob,
    TrainingJobStatus,
    WorkerCounts,
)
from carina.platform.planning.actions import (
    Action,
    CreateWorkers,
    FailJob,
    RestartGang,
    SucceedJob,
)
from carina.platform.planning.failure_policy import blocks_new_gang, kept
from carina.platform.planning.observed import ObservedWorker, final_progress, parse_checkpoint


def set_condition(
    status: TrainingJobStatus,
    type_: ConditionType,
    value: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> None:
    """Set one condition in place; lastTransitionTime moves only when the status flips."""
    wanted = "True" if value else "False"
    for i, cond in enumerate(status.conditions):
        if cond.type == type_:
            moved = cond.status != wanted
            status.conditions[i] = Condition(
                type=type_,
                status=wanted,
                reason=reason,
                message=message,
                last_transition_time=now if moved else cond.last_transition_time,
                observed_generation=generation,
            )
            return
    status.conditions.append(
        Condition(
            type=type_,
            status=wanted,
            reason=reason,
            message=message,
            last_transition_time=now,
            observed_generation=generation,
        )
    )


def get_condition(status: TrainingJobStatus, type_: ConditionType) -> Condition | None:
    """The condition of this type, if set."""
    return next((c for c in status.conditions if c.type == type_), None)


def _clear(
    status: TrainingJobStatus,
    type_: ConditionType,
    reason: Reason,
    message: str,
    now: datetime,
    generation: int | None,
) -> None:
    """Set a condition False, but only if it was ever set (keeps fresh jobs' lists short)."""
    if get_condition(status, type_) is not None:
        set_condition(status, type_, False, reason, message, now, generation)


def _waiting_reason(current: Sequence[ObservedWorker], replicas: int) -> tuple[Reason, str]:
    unschedulable = sorted(w.index for w in current if w.reason == "Unschedulable")
    if unschedulable:
        return Reason.UNSCHEDULABLE, f"workers {unschedulable} cannot be scheduled"
    pending = sum(1 for w in current if w.phase == "Pending")
    ready = sum(1 for w in current if w.ready)
    if len(current) < replicas or pending:
        return Reason.WORKERS_PENDING, f"{ready}/{replicas} workers ready"
    return Reason.WORKERS_STARTING, f"{ready}/{replicas} workers ready"


def derive_status(
    job: TrainingJob,
    workers: Sequence[ObservedWorker],
    previous: TrainingJobStatus | None,
    now: datetime,
) -> TrainingJobStatus:
    """The job's status from its spec, its observed workers and the last written status."""
    status = previous.model_copy(deep=True) if previous else TrainingJobStatus()
    gen = job.metadata.generation
    replicas = job.spec.replicas
    status.workload = job.spec.workload.kind
    status.observed_generation = gen

    current = [w for w in workers if w.restart == status.restarts and w.index < replicas]
    status.workers = WorkerCounts(
        total=len(current),
        ready=sum(1 for w in current if w.ready),
        succeeded=sum(1 for w in current if w.phase == "Succeeded"),
        failed=sum(1 for w in current if w.phase == "Failed"),
    )
    # The workers' final words (termination messages): the checkpoint each acknowledged (the
    # newest wins) and where global rank 0 of the current generation ended. At the step the
    # checkpoint gauge already reported, a final word naming another URI wins too: a result
    # made from that step's checkpoint (quantize's packed model) is the job's final one.
    for w in workers:
        ckpt = parse_checkpoint(w.termination_message, w.finished_at)
        last = status.last_checkpoint
        if ckpt and (
            last is None
            or ckpt.step > last.step
            or (ckpt.step == last.step and ckpt.uri != last.uri)
        ):
            status.last_checkpoint = ckpt

    if status.phase in FINISHED_PHASES:
        return status
    final = final_progress(workers, status.restarts, status.progress, now)
    if final is not None:
        status.progress = final

    stale = any(blocks_new_gang(w, status.restarts, replicas) for w in workers)
    all_running = len(current) == replicas and all(w.ready for w in current) and not stale
    if job.spec.suspend:
        status.phase = Phase.SUSPENDED
        status.start_time = None  # as batch/v1 Job: the deadline restarts on resume
        alive = sum(1 for w in workers if not w.deleting and not kept(w, status.restarts))
        msg = "suspended by spec.suspend" + (f"; stopping {alive} workers" if alive else "")
        set_condition(status, ConditionType.SUSPENDED, True, Reason.SUSPENDED, msg, now, gen)
        _clear(status, ConditionType.RUNNING, Reason.SUSPENDED, msg, now, gen)
        _clear(status, ConditionType.WORKERS_READY, Reason.SUSPENDED, msg, now, gen)
        return status

    if previous is not None and previous.phase == Phase.SUSPENDED:
        status.phase = Phase.STARTING
        _clear(status, ConditionType.SUSPENDED, Reason.RESUMED, "resumed", now, gen)

    if all_running:
        status.phase = Phase.RUNNING
        msg = f"{replicas}/{replicas} workers running"
        set_condition(
            status, ConditionType.WORKERS_READY, True, Reason.WORKERS_RUNNING, msg, now, gen
        )
        set_condition(status, ConditionType.RUNNING, True, Reason.WORKERS_RUNNING, msg, now, gen)
        _clear(status, ConditionType.RESTARTING, Reason.WORKERS_RUNNING, msg, now, gen)
        status.restart_not_before = None
    else:
        reason, msg = _waiting_reason(current, replicas)
        if status.phase == Phase.RUNNING and not all(w.ready for w in current):
            reason, msg = (
                Reason.WORKERS_STARTING,
                f"{status.workers.ready}/{replicas} workers ready",
            )
        set_condition(status, ConditionType.WORKERS_READY, False, reason, msg, now, gen)
        if status.phase == Phase.PENDING and current:
            status.phase = Phase.STARTING
    if status.start_time is None and current:
        status.start_time = now
    return status


def _count_restart(status: TrainingJobStatus, reason: Reason) -> None:
    counts = status.restarts_by_reason
    if reason in INFRASTRUCTURE_REASONS:
        counts.infrastructure += 1
    elif reason in PREEMPTION_REASONS:
        counts.preemption += 1
    else:
        assert reason in APPLICATION_REASONS, reason
        counts.application += 1


def apply_action(
    job: TrainingJob, status: TrainingJobStatus, action: Action, now: datetime
) -> TrainingJobStatus:
    """The status once `action` is taken (a copy; counts a restart only once)."""
    return take_action(job, status.model_copy(deep=True), action, now)


def take_action(
    job: TrainingJob, status: TrainingJobStatus, action: Action, now: datetime
) -> TrainingJobStatus:
    """`apply_action` on `status` itself, for a caller that owns it (the engine's status is
    derive_status's own copy: a second deep copy was a third of a plan's time)."""
    gen = job.metadata.generation
    if isinstance(action, CreateWorkers):
        if status.phase == Phase.PENDING:
            status.phase = Phase.STARTING
        if status.start_time is None:
            status.start_time = now
        if status.phase == Phase.STARTING:
            # The reason the next derive_status gives too, so only the message changes then.
            msg = f"created workers {list(action.indices)}"
            set_condition(
                status, ConditionType.WORKERS_READY, False, Reason.WORKERS_PENDING, msg, now, gen
            )
    elif isinstance(action, RestartGang):
        if status.restarts < action.restart:
            status.restarts = action.restart
            _count_restart(status, action.reason)
            status.phase = Phase.RESTARTING
            status.restart_not_before = action.not_before
            msg = f"restart {action.restart}: {action.message}".rstrip(": ")
            set_condition(status, ConditionType.RESTARTING, True, action.reason, msg, now, gen)
            _clear(status, ConditionType.RUNNING, action.reason, msg, now, gen)
            set_condition(status, ConditionType.WORKERS_READY, False, action.reason, msg, now, gen)
    elif isinstance(action, FailJob):
        status.phase = Phase.FAILED
        status.completion_time = status.completion_time or now
        status.restart_not_before = None
        set_condition(status, ConditionType.FAILED, True, action.reason, action.message, now, gen)
        _clear(status, ConditionType.RUNNING, action.reason, action.message, now, gen)
        _clear(status, ConditionType.RESTARTING, action.reason, action.message, now, gen)
    elif isinstance(action, SucceedJob):
        status.phase = Phase.SUCCEEDED
        status.completion_time = status.completion_time or now
        msg = f"all {job.spec.replicas} workers succeeded"
        set_condition(status, ConditionType.SUCCEEDED, True, Reason.SUCCEEDED, msg, now, gen)
        _clear(status, ConditionType.RUNNING, Reason.SUCCEEDED, msg, now, gen)
        _clear(status, ConditionType.WORKERS_READY, Reason.SUCCEEDED, msg, now, gen)
    return status
