"""What a substrate does next for one TrainingJob: one small value per decision.

`failure_policy.next_action` returns one of these; `status.apply_action` folds it into the
status; the substrate performs its effects (create, delete) idempotently. Each action can be
applied twice without harm, so a substrate that dies half-way simply decides again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from carina.platform.api.reasons import Reason


@dataclass(frozen=True)
class CreateWorkers:
    """Create the workers with these indices, started with CARINA_RESTART = restart."""

    indices: tuple[int, ...]
    restart: int


@dataclass(frozen=True)
class RestartGang:
    """Make the gang generation `restart`: record the restart once, stop every older worker.

    "Older" also covers workers whose index is not below spec.replicas (the job shrank).

    Workers of the new generation are created by a later CreateWorkers, once no older worker
    remains and `not_before` (the backoff) has passed.
    """

    reason: Reason
    restart: int
    not_before: datetime | None = None
    message: str = ""


@dataclass(frozen=True)
class FailJob:
    """Mark the job Failed with this reason and stop every worker still running."""

    reason: Reason
    message: str


@dataclass(frozen=True)
class SucceedJob:
    """Mark the job Succeeded."""


@dataclass(frozen=True)
class SuspendWorkers:
    """Stop every worker (with the checkpoint grace period); keep the job."""


@dataclass(frozen=True)
class DeleteJob:
    """Delete the finished job (ttlSecondsAfterFinished has passed)."""


@dataclass(frozen=True)
class Wait:
    """Nothing to do until `until` (None: until something changes)."""

    until: datetime | None = None


@dataclass(frozen=True)
class Nothing:
    """Nothing to do, and no time to wait for."""


Action = (
    CreateWorkers | RestartGang | FailJob | SucceedJob | SuspendWorkers | DeleteJob | Wait | Nothing
)
