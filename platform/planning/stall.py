"""The stall rule: when a Running job whose step stopped advancing is stalled (pure).

A hung collective, a deadlocked data loader or a wedged filesystem leaves every worker alive
and Ready while the job trains nothing: no exit code, no failed pod, only a step that stops
moving. The one sign is on the progress channel (rank 0's /metrics, `progress.py`): the step
gauge and rank 0's median step time (`progress.stepSeconds`). The engine keeps, in
`progress.steppedAt`, when the step last advanced (`with_stepped_at`), and a Running job is
stalled (`stall_verdict`) when

- it stepped since its workers started running, but not for more than
  max(`factor` x its median step time, `minSeconds`) (`spec.failurePolicy.stall`; defaults
  10 and 60 s: a checkpoint save or an evaluation pauses the step, and must not count);
- or it logged no step at all in the `startupSeconds` (default 1800) since its workers
  started running (data loading, the resume, compilation and the first step), which is also
  the limit while no median step time is known.

"Started running" is the last time the Running condition turned True, so a restarted or
resumed gang gets its startup time again. A gang whose rank 0 has given its final word, or
has done its last step (it is saving the final checkpoint), is not stalled.

What follows (`check_stall`): the `Stalled` condition turns True with the evidence (the last
step, when, the median step time, the factor and the seconds without a step), which the
engine posts as a Warning event; with `stall.restart` (the default) the gang restarts from
its checkpoint, an application restart (a deterministic hang consumes maxRestarts and backs
off, so it cannot loop forever). Stalled turns False once the step advances again. Until a
job is stalled the action waits until the moment it would be (`Wait.until`), so a substrate
looks again then without any event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from carina.platform.api.reasons import ConditionType, Reason
from carina.platform.api.types import (
    Phase,
    Progress,
    StallPolicy,
    TrainingJob,
    TrainingJobStatus,
)
from carina.platform.planning.actions import Action, Nothing, Wait
from carina.platform.planning.failure_policy import restart_or_fail
from carina.platform.planning.observed import ObservedWorker, said_final_word
from carina.platform.planning.status import get_condition, set_condition


@dataclass(frozen=True)
class StallVerdict:
    """Whether a Running job is stalled, the evidence, and else when it would be."""

    stalled: bool
    evidence: str  # the Stalled condition's message
    summary: str  # the restart's
    # When it is stalled if no step comes first (None once stalled).
    at: datetime | None


def _when(t: datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def with_stepped_at(known: Progress | None, new: Progress) -> Progress:
    """`new`, with `steppedAt` kept from `known` while the step has not moved."""
    if known is not None and known.step == new.step and known.stepped_at is not None:
        return new.model_copy(update={"stepped_at": known.stepped_at})
    if new.stepped_at is None:
        return new.model_copy(update={"stepped_at": new.updated_at})
    return new


def allowance(policy: StallPolicy, step_seconds: float | None) -> timedelta:
    """How long a job that has stepped may go without a step before it is stalled."""
    if not step_seconds:
        return timedelta(seconds=max(policy.startup_seconds, policy.min_seconds))
    return timedelta(seconds=max(policy.factor * step_seconds, policy.min_seconds))


def stall_verdict(
    policy: StallPolicy, status: TrainingJobStatus, now: datetime
) -> StallVerdict | None:
    """Whether this Running job is stalled at `now` (None: not Running, nothing to judge)."""
    running = get_condition(status, ConditionType.RUNNING)
    if status.phase != Phase.RUNNING or running is None or running.status != "True":
        return None
    since = running.last_transition_time
    progress = status.progress
    stepped = progress.stepped_at if progress is not None else None
    if progress is None or stepped is None or stepped < since:
        limit = timedelta(seconds=policy.startup_seconds)
        quiet = (now - since).total_seconds()
        summary = f"no step in the {quiet:.0f}s since the workers started running"
        evidence = f"{summary} at {_when(since)} (startupSeconds is {policy.startup_seconds})"
        late = now - since > limit
        return StallVerdict(late, evidence, summary, None if late else since + limit)
    limit = allowance(policy, progress.step_seconds)
    quiet = (now - stepped).total_seconds()
    if progress.step_seconds:
        why = (
            f"the median step time is {progress.step_seconds:.3g}s and the limit"
            f" {limit.total_seconds():.0f}s is max({policy.factor:g} x the median,"
            f" minSeconds {policy.min_seconds})"
        )
    else:
        why = f"no median step time is known, so the limit is {limit.total_seconds():.0f}s"
    summary = f"no step for {quiet:.0f}s after step {progress.step}"
    evidence = f"{summary}, which it reached at {_when(stepped)}; {why}"
    late = now - stepped > limit
    return StallVerdict(late, evidence, summary, None if late else stepped + limit)


def _finishing(status: TrainingJobStatus, workers: Sequence[ObservedWorker]) -> bool:
    """Rank 0 has given its final word, or done the last step (the final save is under way)."""
    p = status.progress
    done = p is not None and p.total_steps > 0 and p.step >= p.total_steps
    return done or said_final_word(workers, status.restarts)


def check_stall(
    job: TrainingJob,
    status: TrainingJobStatus,
    workers: Sequence[ObservedWorker],
    action: Action,
    now: datetime,
) -> Action:
    """Judge a Running job that has nothing else to do: the Stalled condition (in `status`)
    and the action (a restart or failure when stalled, else a wait until it would be)."""
    gen = job.metadata.generation
    stalled = get_condition(status, ConditionType.STALLED)
    p = status.progress
    last = p.stepped_at if p is not None else None
    stepped_again = (
        stalled is not None
        and stalled.status == "True"
        and last is not None
        and last > stalled.last_transition_time
    )
    if stepped_again and p is not None and last is not None:
        message = f"step {p.step} at {_when(last)}"
        set_condition(status, ConditionType.STALLED, False, Reason.STEPPING, message, now, gen)
    if not isinstance(action, (Nothing, Wait)) or _finishing(status, workers):
        return action
    policy = job.spec.failure_policy.stall
    verdict = stall_verdict(policy, status, now)
    if verdict is None:
        return action
    if not verdict.stalled or stepped_again:
        # Stalled again already: one transition per reconcile, so look again at once and
        # tell it anew (its own event).
        at = verdict.at or now
        until = action.until if isinstance(action, Wait) else None
        return Wait(at if until is None else min(until, at))
    running = get_condition(status, ConditionType.RUNNING)
    since = running.last_transition_time if running is not None else now
    if stalled is None or stalled.status != "True" or stalled.last_transition_time < since:
        # The evidence as it stood when this gang was found stalled (it does not tick on).
        set_condition(
            status, ConditionType.STALLED, True, Reason.STALLED, verdict.evidence, now, gen
        )
    if not policy.restart:
        return action
    return restart_or_fail(job, status, Reason.STALLED, f"stalled: {verdict.summary}", now)
