"""The lifecycle engine: one pure function decides a job's next status, action and events.

Both substrates call `plan` once per reconcile of a job, with what they observed: the job (its
spec and last written status), its workers, whether it is admitted, and the newest progress
and checkpoint their one progress channel saw. They carry out the action, write the status
when it changed and post the events; they decide nothing themselves. So a job reads the same,
phase for phase, condition for condition and event for event, on a cluster and on a laptop.

The rules, in order:
1. Status from the workers (`status.derive_status`): counts, phase, conditions.
2. The newest progress and checkpoint are folded in.
3. The failure policy's next action (`failure_policy.next_action`): create, restart, fail,
   succeed, suspend, delete, wait.
4. Admission: a gang that is not admitted gets no workers. It waits Queued (behind other jobs)
   or Pending (larger than everything there is), with the Admitted condition saying why.
5. The action is folded into the status (`status.apply_action`).
6. Events come from the difference between the last written status and the new one
   (`events`), in the words of `carina.platform.api.reasons`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from carina.platform.api.reasons import ConditionType, Reason
from carina.platform.api.types import (
    FINISHED_PHASES,
    CheckpointStatus,
    Condition,
    Phase,
    Progress,
    TrainingJob,
    TrainingJobStatus,
)
from carina.platform.planning.actions import Action, CreateWorkers, FailJob, Nothing, Wait
from carina.platform.planning.failure_policy import next_action
from carina.platform.planning.observed import ObservedWorker
from carina.platform.planning.status import apply_action, derive_status, set_condition

EventType = Literal["Normal", "Warning"]

# Reasons that say something went wrong: their events are Warnings.
WARNING_REASONS = frozenset(
    {
        Reason.WORKER_FAILED,
        Reason.NODE_FAILURE,
        Reason.EVICTED,
        Reason.PREEMPTED,
        Reason.PERMANENT_EXIT_CODE,
        Reason.MAX_RESTARTS_EXCEEDED,
        Reason.DEADLINE_EXCEEDED,
        Reason.UNSCHEDULABLE,
        Reason.INVALID_SPEC,
        Reason.WORKERS_REFUSED,
        Reason.CHECKPOINT_CORRUPT,
    }
)

# Conditions whose turning True is news; the others explain, and stay quiet.
_NEWS = (
    ConditionType.RUNNING,
    ConditionType.RESTARTING,
    ConditionType.SUSPENDED,
    ConditionType.SUCCEEDED,
    ConditionType.FAILED,
)


@dataclass(frozen=True)
class JobAdmission:
    """Whether the job's gang may have workers now, and if not, why."""

    admitted: bool = True
    message: str = "admitted"
    # Larger than everything the substrate has: no amount of waiting admits it.
    never_fits: bool = False


ADMITTED = JobAdmission()


@dataclass(frozen=True)
class JobEvent:
    """One event about the job, as both substrates post it."""

    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    """What to write, what to do, and what to tell."""

    status: TrainingJobStatus
    action: Action
    events: tuple[JobEvent, ...]


def plan(
    job: TrainingJob,
    workers: Sequence[ObservedWorker],
    now: datetime,
    admission: JobAdmission = ADMITTED,
    progress: Progress | None = None,
    checkpoint: CheckpointStatus | None = None,
    damaged: frozenset[str] = frozenset(),
    refused: str | None = None,
) -> Plan:
    """The job's next status, action and events (see the module docstring for the rules).

    `job.status` is the last written status. `progress` and `checkpoint` are the newest the
    substrate's progress channel saw; `damaged` names checkpoints a worker found damaged,
    which status then no longer offers as the last checkpoint. `refused` is what the
    substrate was told when it tried to create the workers this plan asked for and they were
    refused as invalid: the same gang would be refused again, so the job fails.
    """
    previous = job.status
    status = derive_status(job, workers, previous, now)
    if progress is not None and status.phase not in FINISHED_PHASES:
        status.progress = progress
    if checkpoint is not None and (
        status.last_checkpoint is None or checkpoint.step > status.last_checkpoint.step
    ):
        status.last_checkpoint = checkpoint
    if status.last_checkpoint is not None and status.last_checkpoint.uri in damaged:
        intact = checkpoint is not None and checkpoint.uri not in damaged
        status.last_checkpoint = checkpoint if intact else None
    action: Action = next_action(job, status, workers, now)
    gen = job.metadata.generation
    if isinstance(action, CreateWorkers) and refused is not None:
        action = FailJob(Reason.WORKERS_REFUSED, refused)
    if isinstance(action, CreateWorkers):
        if not admission.admitted:
            status.phase = Phase.PENDING if admission.never_fits else Phase.QUEUED
            set_condition(
                status,
                ConditionType.ADMITTED,
                False,
                Reason.UNSCHEDULABLE,
                admission.message,
                now,
                gen,
            )
            return Plan(status, Wait(None), events(previous, status, Wait(None)))
        if status.phase == Phase.QUEUED:
            status.phase = Phase.PENDING
        set_condition(
            status, ConditionType.ADMITTED, True, Reason.CREATED, admission.message, now, gen
        )
    status = apply_action(job, status, action, now)
    return Plan(status, action, events(previous, status, action))


def plan_invalid(previous: TrainingJobStatus | None, problems: str, now: datetime) -> Plan:
    """A stored job the models refuse: Failed with InvalidSpec (a finished job keeps its status).

    The API refuses such a spec; only an older version or a hand-edited store holds one.
    """
    if previous is not None and previous.phase in FINISHED_PHASES:
        return Plan(previous, Nothing(), ())
    status = previous.model_copy(deep=True) if previous else TrainingJobStatus()
    status.phase = Phase.FAILED
    status.completion_time = status.completion_time or now
    status.restart_not_before = None
    message = f"the stored spec is invalid: {problems}"[:4096]
    set_condition(status, ConditionType.FAILED, True, Reason.INVALID_SPEC, message, now)
    action = FailJob(Reason.INVALID_SPEC, message)
    return Plan(status, action, events(previous, status, action))


def _was(previous: TrainingJobStatus | None, type_: ConditionType) -> Condition | None:
    if previous is None:
        return None
    return next((c for c in previous.conditions if c.type == type_), None)


def events(
    previous: TrainingJobStatus | None, status: TrainingJobStatus, action: Action
) -> tuple[JobEvent, ...]:
    """The events between two statuses: what a person watching the job should hear.

    - workers created: `Created`, with their indices and generation;
    - a condition of `_NEWS` that turns True, or changes its reason while True: its reason
      and message (a restart's message names the rank and quotes its last log lines);
    - queued (Admitted turns False), resumed (Suspended turns False), and workers that cannot
      be scheduled (WorkersReady False for Unschedulable): their reason and message.

    Warning for the reasons in `WARNING_REASONS`, Normal otherwise.
    """
    out: list[JobEvent] = []
    if isinstance(action, CreateWorkers):
        out.append(
            JobEvent(
                "Normal",
                Reason.CREATED,
                f"started workers {list(action.indices)} (restart {action.restart})",
            )
        )
    for cond in status.conditions:
        before = _was(previous, ConditionType(cond.type))
        if before is not None and (before.status, before.reason) == (cond.status, cond.reason):
            continue
        news = (
            (cond.type in _NEWS and cond.status == "True")
            or (cond.type == ConditionType.ADMITTED and cond.status == "False")
            or (cond.type == ConditionType.SUSPENDED and cond.status == "False" and before)
            or (cond.type == ConditionType.WORKERS_READY and cond.reason == Reason.UNSCHEDULABLE)
        )
        if news:
            kind: EventType = "Warning" if cond.reason in WARNING_REASONS else "Normal"
            out.append(JobEvent(kind, cond.reason, cond.message))
    return tuple(out)
