"""The lifecycle engine: one pure function decides a job's next status, action and events.

Both substrates call `plan` once per reconcile of a job, with what they observed: the job (its
spec and last written status), its workers, whether it is admitted, and what their one
progress channel, a scrape of global rank 0's /metrics (`planning.progress.read_scrape`), last
said: progress, the newest checkpoint and the damaged checkpoints a resume passed over. They
carry out the action, write the status when it changed and post the events; they decide
nothing themselves. So a job reads the same, phase for phase, condition for condition and event
for event, on a cluster and on a laptop.

The rules, in order:
1. Status from the workers (`status.derive_status`): counts, phase, conditions, and their
   termination messages' checkpoints and final step.
2. The newest progress and checkpoint are folded in: scraped progress, unless global rank 0
   of the current generation has exited with its final word (which wins); with no new report
   status keeps the last known progress. Damaged checkpoints are recorded in
   `status.damagedCheckpoints` and not offered as the last checkpoint until saved over.
   `progress.steppedAt` keeps when the step last advanced (`stall.with_stepped_at`).
3. The failure policy's next action (`failure_policy.next_action`): create, restart, fail,
   succeed, suspend, delete, wait. A gang with a live worker on a node the health agent
   found broken (EVICT) restarts instead, counted as infrastructure (`_moved_off`).
4. Upstream jobs (`dependencies.gate`), then admission. A job whose upstream failed, or whose
   dependencies loop, fails (UpstreamFailed, UpstreamWithoutCheckpoint, DependencyCycle); one
   whose upstreams have not all Succeeded waits Pending with no workers, the Admitted
   condition naming the job it waits for (WaitingForUpstream, UpstreamMissing); a clear one
   records its resolved inputs in `status.inputs`. A gang that is not admitted gets no
   workers. It waits Queued (behind other jobs) or Pending (larger than everything there is),
   with the Admitted condition saying why.
   Workers created now are pinned to the topology domain the substrate chose, and
   `status.placement` says which.
   A Running gang with nothing else to do is judged by the stall rule (`stall.check_stall`):
   stalled, it gets the Stalled condition with the evidence and restarts from its checkpoint
   (an application restart); not yet, it waits until the moment it would be.
5. The action is folded into the status (`status.apply_action`); the per-rank step times
   name the Running gang's stragglers (`stragglers.update_stragglers`).
6. Events come from the difference between the last written status and the new one
   (`events`), in the words of `carina.platform.api.reasons`: a damaged checkpoint new to
   `status.damagedCheckpoints` is one CheckpointCorrupt Warning, once; so is a straggler
   new to `status.stragglers` one Straggler Warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from carina.platform.api.reasons import ConditionType, QueueReason, Reason
from carina.platform.api.types import (
    FINISHED_PHASES,
    CheckpointStatus,
    Condition,
    DamagedCheckpoint,
    Phase,
    Progress,
    TopologyPlacement,
    TrainingJob,
    TrainingJobStatus,
)
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
from carina.platform.planning.dependencies import CLEAR, Gate
from carina.platform.planning.failure_policy import kept, next_action
from carina.platform.planning.goodput import account
from carina.platform.planning.observed import ObservedWorker, parse_checkpoint, said_final_word
from carina.platform.planning.progress import damaged_message, record_damaged
from carina.platform.planning.stall import check_stall, with_stepped_at
from carina.platform.planning.status import derive_status, set_condition, take_action
from carina.platform.planning.stragglers import newly_named, straggler_message, update_stragglers

EventType = Literal["Normal", "Warning"]

# Reasons that say something went wrong: their events are Warnings.
WARNING_REASONS = frozenset(
    {
        Reason.WORKER_FAILED,
        Reason.NODE_FAILURE,
        Reason.NODE_UNHEALTHY,
        Reason.EVICTED,
        Reason.PREEMPTED,
        Reason.PERMANENT_EXIT_CODE,
        Reason.MAX_RESTARTS_EXCEEDED,
        Reason.DEADLINE_EXCEEDED,
        Reason.UNSCHEDULABLE,
        Reason.INVALID_SPEC,
        Reason.WORKERS_REFUSED,
        Reason.NO_TOPOLOGY_DOMAIN,
        Reason.UNKNOWN_TOPOLOGY_LEVEL,
        Reason.CHECKPOINT_CORRUPT,
        Reason.GRACE_PERIOD_EXCEEDED,
        Reason.STALLED,
        Reason.STRAGGLER,
        QueueReason.PODS_READY_TIMEOUT,
        QueueReason.CLUSTER_QUEUE_STOPPED,
        QueueReason.EXCEEDS_MAX_QUOTA,
        QueueReason.MISCONFIGURED,
        QueueReason.DEACTIVATED,
        Reason.UPSTREAM_MISSING,
        Reason.UPSTREAM_FAILED,
        Reason.UPSTREAM_WITHOUT_CHECKPOINT,
        Reason.DEPENDENCY_CYCLE,
    }
)

# Conditions whose turning True is news; the others explain, and stay quiet.
_NEWS = (
    ConditionType.RUNNING,
    ConditionType.RESTARTING,
    ConditionType.SUSPENDED,
    ConditionType.SUCCEEDED,
    ConditionType.FAILED,
    ConditionType.CHECKPOINTED,
    ConditionType.STALLED,
)


@dataclass(frozen=True)
class JobAdmission:
    """Whether the job's gang may have workers now, and if not, why."""

    admitted: bool = True
    message: str = "admitted"
    # Larger than everything the substrate has: no amount of waiting admits it.
    never_fits: bool = False
    # Why, in the words of `QueueReason` (None: the substrate's own capacity check).
    reason: str | None = None
    # Its quota is being taken back: the workers save a checkpoint and leave.
    evicting: bool = False
    eviction_requested_at: datetime | None = None


ADMITTED = JobAdmission()


def upstream_admission(upstream: Gate, admission: JobAdmission) -> JobAdmission:
    """The admission with the upstream gate before it: a job waiting for the jobs it depends
    on is not admitted, whatever its quota says (a substrate applies this before its own
    gates, topology and preflight, so they leave a waiting job alone)."""
    if not upstream.waits:
        return admission
    return JobAdmission(False, upstream.message, reason=upstream.reason)


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
    damaged: Iterable[DamagedCheckpoint] = (),
    refused: str | None = None,
    acked: CheckpointStatus | None = None,
    unhealthy: Mapping[str, str] | None = None,
    placement: TopologyPlacement | None = None,
    rank_seconds: Mapping[int, float] | None = None,
    watching: bool = True,
    upstream: Gate = CLEAR,
) -> Plan:
    """The job's next status, action and events (see the module docstring for the rules).

    `job.status` is the last written status. `progress` and `checkpoint` are the newest the
    substrate's progress channel saw (None: nothing new); `damaged` are the checkpoints rank 0's
    resume passed over as damaged: status records them and warns about each once, and does not
    offer one as the last checkpoint until the worker has saved at or past its step. `refused`
    is what the substrate was told when it tried to create the workers this plan asked for and
    they were refused as invalid: the same gang would be refused again, so the job fails.
    `acked` is a checkpoint a worker acknowledged in its final state when that worker is no
    longer among `workers` (the operator's pods vanish within one event batch). `unhealthy`
    names the nodes the health agent found broken (EVICT), each with what it found: a gang
    with a live worker on one saves and restarts elsewhere (`_moved_off`). `placement` is the
    topology domain the substrate pins the workers it creates now to (`planning.placement`;
    None: unpinned): status records it with them. `rank_seconds` are each rank's recent
    compute seconds per step, by global rank, from the same scrape (None: nothing new).
    `watching` says whether the substrate reads rank 0's progress at all (an operator with
    scraping off does not): without it no job is judged stalled. `upstream` is what the jobs
    this one depends on allow (`dependencies.gate`): it goes before admission.
    """
    previous = job.status
    status = derive_status(job, workers, previous, now)
    if upstream.clear and upstream.inputs:
        status.inputs = list(upstream.inputs)
    admission = upstream_admission(upstream, admission)
    if (
        progress is not None
        and status.phase not in FINISHED_PHASES
        and not said_final_word(workers, status.restarts)
    ):
        status.progress = with_stepped_at(status.progress, progress)
    if checkpoint is not None and (
        status.last_checkpoint is None or checkpoint.step > status.last_checkpoint.step
    ):
        status.last_checkpoint = checkpoint
    reported = tuple(damaged)
    # Damaged until the worker saves at or past its step (a save replaces a damaged one).
    bad = {d.uri for d in reported if checkpoint is None or d.step > checkpoint.step}
    if status.last_checkpoint is not None and status.last_checkpoint.uri in bad:
        intact = checkpoint is not None and checkpoint.uri not in bad
        status.last_checkpoint = checkpoint if intact else None
    record_damaged(status, reported)
    action: Action = next_action(job, status, workers, now)
    action = _moved_off(status, workers, unhealthy or {}, action)
    if (
        upstream.fails
        and not isinstance(action, (SucceedJob, FailJob, DeleteJob))
        and not any(w.active for w in workers)
    ):
        action = FailJob(Reason(upstream.reason), upstream.message)
    gen = job.metadata.generation
    if admission.evicting and not isinstance(action, (SucceedJob, FailJob, DeleteJob)):
        action = _evict(job, status, workers, admission, now, acked)
        killed = _newly(previous, status, ConditionType.CHECKPOINTED, Reason.GRACE_PERIOD_EXCEEDED)
        status.goodput = account(job, previous, status, action, now, killed)
        return Plan(status, action, events(previous, status, action))
    if watching:
        action = check_stall(job, status, workers, action, now)
    if isinstance(action, CreateWorkers) and refused is not None:
        action = FailJob(Reason.WORKERS_REFUSED, refused)
    if isinstance(action, CreateWorkers):
        if not admission.admitted:
            # Pending: nothing a queue decides will start it (too large; an upstream first).
            status.phase = Phase.PENDING if admission.never_fits or upstream.waits else Phase.QUEUED
            set_condition(
                status,
                ConditionType.ADMITTED,
                False,
                admission.reason or Reason.UNSCHEDULABLE,
                admission.message,
                now,
                gen,
            )
            status.goodput = account(job, previous, status, Wait(None), now)
            return Plan(status, Wait(None), events(previous, status, Wait(None)))
        if status.phase == Phase.QUEUED:
            status.phase = Phase.PENDING
        set_condition(
            status, ConditionType.ADMITTED, True, Reason.CREATED, admission.message, now, gen
        )
        status.placement = placement  # the domain the new workers are pinned to
    status = take_action(job, status, action, now)  # derive_status's copy: ours to change
    update_stragglers(job, status, workers, rank_seconds)
    status.goodput = account(job, previous, status, action, now)
    return Plan(status, action, events(previous, status, action))


def _moved_off(
    status: TrainingJobStatus,
    workers: Sequence[ObservedWorker],
    unhealthy: Mapping[str, str],
    action: Action,
) -> Action:
    """A gang with a live worker on a broken node restarts elsewhere, as infrastructure.

    The restart stops the gang the way a preemption does (SIGTERM: every rank saves, then
    exits), so it resumes where it was; its new workers avoid the node (node affinity on the
    health label, and the operator's taint). A failure, a suspension or a restart already
    decided goes first.
    """
    if not unhealthy or not isinstance(action, (Nothing, Wait, CreateWorkers)):
        return action
    on_bad = [
        w for w in workers if w.restart == status.restarts and w.active and w.node in unhealthy
    ]
    if not on_bad:
        return action
    worker = min(on_bad, key=lambda w: w.index)
    assert worker.node is not None
    what = f"worker {worker.index} is on a broken node; {unhealthy[worker.node]}"
    return RestartGang(Reason.NODE_UNHEALTHY, status.restarts + 1, None, what)


def _newly(
    previous: TrainingJobStatus | None,
    status: TrainingJobStatus,
    type_: ConditionType,
    reason: str,
) -> bool:
    """Whether the condition now has this reason and did not before."""
    now_ = next((c for c in status.conditions if c.type == type_), None)
    was = _was(previous, type_)
    return now_ is not None and now_.reason == reason and (was is None or was.reason != reason)


def _evict(
    job: TrainingJob,
    status: TrainingJobStatus,
    workers: Sequence[ObservedWorker],
    admission: JobAdmission,
    now: datetime,
    acked: CheckpointStatus | None,
) -> Action:
    """Its quota is being taken back: every rank gets SIGTERM at once, saves, and leaves.

    The job waits Queued meanwhile; Checkpointed says whether rank 0 acknowledged a save
    made after the eviction was asked for (its termination message), or, once every worker
    is gone without one, how many steps the job will redo.
    """
    gen = job.metadata.generation
    status.phase = Phase.QUEUED
    reason = admission.reason or QueueReason.PREEMPTED
    set_condition(status, ConditionType.ADMITTED, False, reason, admission.message, now, gen)
    if any(c.type == ConditionType.RUNNING and c.status == "True" for c in status.conditions):
        set_condition(status, ConditionType.RUNNING, False, reason, admission.message, now, gen)
    asked = admission.eviction_requested_at
    ckpt = status.last_checkpoint
    # Only a save the workers acknowledged in their last word after the eviction was asked
    # for counts: a periodic checkpoint seen late on /metrics is older than the request. A
    # kubelet stamps a container's finish to the second: compare at that precision.
    said = [parse_checkpoint(w.termination_message, w.finished_at) for w in workers]
    fresh = [
        a
        for a in (*said, acked)
        if a is not None
        and asked is not None
        and a.time is not None
        and a.time >= asked.replace(microsecond=0)
    ]
    ack = max(fresh, key=lambda a: a.step, default=None)
    before = next((c for c in status.conditions if c.type == ConditionType.CHECKPOINTED), None)
    if before is not None and asked is not None and before.last_transition_time < asked:
        status.conditions.remove(before)  # an earlier eviction's: this one is told anew
        before = None
    saved = ack is not None or (
        before is not None
        and before.status == "True"
        and asked is not None
        and before.last_transition_time >= asked
    )
    if ack is not None:
        set_condition(
            status,
            ConditionType.CHECKPOINTED,
            True,
            Reason.CHECKPOINT_SAVED,
            f"saved step {ack.step} before leaving ({ack.uri}); it resumes there",
            now,
            gen,
        )
    mine = [w for w in workers if not kept(w, status.restarts)]
    stop = SuspendWorkers() if any(not w.deleting for w in mine) else Nothing()
    if any(not w.finished for w in mine):
        return stop  # still saving: its last word may yet come
    if not saved and asked is not None:
        step = status.progress.step if status.progress else 0
        done = ckpt.step if ckpt is not None else 0
        set_condition(
            status,
            ConditionType.CHECKPOINTED,
            False,
            Reason.GRACE_PERIOD_EXCEEDED,
            f"no checkpoint was acknowledged before the workers were gone; it resumes from"
            f" step {done} and redoes {max(0, step - done)} steps",
            now,
            gen,
        )
    return stop


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
      be scheduled (WorkersReady False for Unschedulable): their reason and message;
    - a damaged checkpoint new to `damagedCheckpoints`: CheckpointCorrupt, naming the step,
      the file and why;
    - a straggler new to `stragglers`: Straggler, naming the rank, its worker and node.

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
    known = (previous.damaged_checkpoints if previous else None) or []
    for damaged in status.damaged_checkpoints or ():
        if damaged not in known:
            out.append(JobEvent("Warning", Reason.CHECKPOINT_CORRUPT, damaged_message(damaged)))
    for straggler in newly_named(previous, status):
        out.append(JobEvent("Warning", Reason.STRAGGLER, straggler_message(straggler)))
    return tuple(out)
