"""Where a job's GPU time went: allocated, productive, and lost by reason (pure).

`account(job, previous, status, action, now)` advances `status.goodput` from the last time it
was advanced (`updatedAt`) to `now`, with what held between those two moments (the previous
status: its workers, its phase), and books the loss an action makes now:

- **allocated**: GPU-seconds the job's workers held their GPUs (`workers.total` × GPUs each);
- **restart pauses**: of those, the seconds while the gang was starting or restarting, so not
  every rank was training;
- **lost to failures** / **lost to preemption**: when a gang restarts or is evicted, the work
  since its last checkpoint (its age, capped by the gang's own runtime) × the gang's GPUs:
  that work is redone. A victim that acknowledged a save made for the eviction loses none;
- **checkpoint saves**: the seconds rank 0 reports spending in collective saves
  (`progress.checkpointSeconds`, its save-time histogram's sum) × the gang's GPUs: the ranks
  save together, so no rank trains meanwhile;
- **productive**: allocated minus the four losses;
- **queue wait**: wall seconds the job waited for quota or capacity holding no GPUs (not the
  time it waited for the jobs it depends on, which no quota would have shortened).

Each reconcile advances it, so the figures are exact at reconcile times and never further off
than the time between two reconciles of a running job (or one scrape, for save time).
"""

from __future__ import annotations

from datetime import datetime

from carina.platform.api.reasons import ConditionType, Reason
from carina.platform.api.types import (
    FINISHED_PHASES,
    GoodputStatus,
    Phase,
    TrainingJob,
    TrainingJobStatus,
)
from carina.platform.planning.actions import Action, RestartGang

_PAUSED = (Phase.STARTING, Phase.RESTARTING)
_WAITING = (Phase.QUEUED, Phase.PENDING)
_UPSTREAM = (Reason.WAITING_FOR_UPSTREAM, Reason.UPSTREAM_MISSING)


def account(
    job: TrainingJob,
    previous: TrainingJobStatus | None,
    status: TrainingJobStatus,
    action: Action,
    now: datetime,
    evicted_without_save: bool = False,
) -> GoodputStatus:
    """`status.goodput` advanced to `now` (see the module docstring)."""
    before = previous.goodput if previous is not None and previous.goodput else None
    if before is not None and previous is not None and previous.phase in FINISHED_PHASES:
        return before  # a finished job's account is closed
    g = before.model_copy() if before is not None else GoodputStatus()
    per_worker = job.spec.resources.gpus
    if previous is not None and g.updated_at is not None and now > g.updated_at:
        dt = (now - g.updated_at).total_seconds()
        held = previous.workers.total * per_worker * dt
        g.allocated += held
        if previous.phase in _PAUSED:
            g.restart_pauses += held
        if previous.phase in _WAITING and previous.workers.total == 0 and not _upstream(previous):
            g.queue_wait_seconds += dt
    gang = job.spec.replicas * per_worker
    restarted = isinstance(action, RestartGang) and (
        previous is None or action.restart > previous.restarts
    )
    if restarted:
        g.lost_to_failures += _since_checkpoint(status, now) * gang
    if evicted_without_save:
        g.lost_to_preemption += _since_checkpoint(status, now) * gang
    saving = status.progress.checkpoint_seconds if status.progress else None
    if saving is not None:
        # A new attempt's sum starts again from 0: what it reports is all new.
        new = saving - g.saves_booked_seconds if saving >= g.saves_booked_seconds else saving
        g.checkpoint_saves += new * gang
        g.saves_booked_seconds = saving
    g.productive = max(
        0.0,
        g.allocated
        - g.restart_pauses
        - g.lost_to_failures
        - g.lost_to_preemption
        - g.checkpoint_saves,
    )
    g.updated_at = now
    return g


def _upstream(status: TrainingJobStatus) -> bool:
    """Whether the job waited for its upstream jobs (Admitted False for that reason)."""
    admitted = next((c for c in status.conditions if c.type == ConditionType.ADMITTED), None)
    return admitted is not None and admitted.status == "False" and admitted.reason in _UPSTREAM


def _since_checkpoint(status: TrainingJobStatus, now: datetime) -> float:
    """Seconds of training since the newest checkpoint (or since the gang started)."""
    start = status.start_time
    saved = status.last_checkpoint.time if status.last_checkpoint else None
    since = max((t for t in (start, saved) if t is not None), default=None)
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0
