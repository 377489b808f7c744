"""A job's history record: its summary (what a listing shows) and the rest (one record).

Built from what the platform still knows about a job when it finishes or is deleted: the
manifest with its status, its events, the loss curve and the tail of each worker's log.
`merged` combines a record taken at the job's end with one taken at its deletion, when the
later capture could no longer read something (on a cluster the pods may be gone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

_T = TypeVar("_T")

# At most this many points of a curve are kept: a long run's loss curve is thinned evenly.
MAX_CURVE_POINTS = 2000


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class HistoryEvent(_Model):
    """An event of the job, as Kubernetes counts repeats of one."""

    type: str = Field(description="Normal or Warning")
    reason: str
    message: str
    count: int = 1
    first_timestamp: datetime | None = None
    last_timestamp: datetime | None = None


class HistoryMetrics(_Model):
    loss: list[tuple[int, float]] = Field(
        default_factory=list, description="[[step, training loss], ...]"
    )
    eval_loss: list[tuple[int, float]] = Field(
        default_factory=list, description="[[step, held-out loss], ...]"
    )
    tokens_per_second: float | None = Field(None, description="the last reported throughput")
    goodput: float | None = Field(
        None, description="productive over allocated GPU time, 0..1 (null: no GPU time booked)"
    )


class HistorySummary(_Model):
    """One row of `GET .../history`: who the job was and how it ended."""

    uid: str
    namespace: str
    name: str
    phase: str
    reason: str | None = None
    message: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    queue: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    deleted_at: datetime | None = None
    restarts: int = 0
    final_step: int | None = None
    final_loss: float | None = None

    def sort_time(self) -> float:
        """When the job ended for the listing's order: finished, else deleted, else created."""
        when = self.finished_at or self.deleted_at or self.created_at
        return when.timestamp() if when is not None else 0.0


class HistoryRecord(HistorySummary):
    """`GET .../history/{uid}`: the summary, the job's spec and status, and what it left."""

    spec: dict[str, Any] = Field(default_factory=dict)
    status: dict[str, Any] = Field(default_factory=dict)
    conditions: list[dict[str, Any]] = Field(default_factory=list)
    events: list[HistoryEvent] = Field(default_factory=list)
    metrics: HistoryMetrics = Field(default_factory=HistoryMetrics)
    logs: dict[str, str] = Field(default_factory=dict, description="worker index -> log tail")

    def summary(self) -> HistorySummary:
        return HistorySummary.model_validate(
            self.model_dump(include=set(HistorySummary.model_fields))
        )


class HistoryListing(_Model):
    """`GET .../history`: a page of summaries, newest end first."""

    items: list[HistorySummary]
    continue_: str | None = Field(
        None, alias="continue", description="pass as ?continue= for the next page; null: last"
    )


@dataclass(frozen=True)
class EventSeen:
    """One occurrence of an event (the embedded store keeps each), or a counted one."""

    type: str
    reason: str
    message: str
    first: datetime | None
    last: datetime | None = None
    count: int = 1


def counted_events(seen: Iterable[EventSeen]) -> list[HistoryEvent]:
    """Events with repeats of one (type, reason, message) folded into a count, oldest first."""
    folded: dict[tuple[str, str, str], HistoryEvent] = {}
    for e in seen:
        key = (e.type, e.reason, e.message)
        last = e.last or e.first
        old = folded.get(key)
        if old is None:
            folded[key] = HistoryEvent(
                type=e.type,
                reason=e.reason,
                message=e.message,
                count=e.count,
                first_timestamp=e.first,
                last_timestamp=last,
            )
            continue
        old.count += e.count
        old.first_timestamp = _earliest(old.first_timestamp, e.first)
        old.last_timestamp = _latest(old.last_timestamp, last)
    epoch = datetime.fromtimestamp(0, UTC)
    return sorted(folded.values(), key=lambda e: e.first_timestamp or epoch)


def thinned(
    points: Sequence[tuple[int, float]], limit: int = MAX_CURVE_POINTS
) -> list[tuple[int, float]]:
    """At most `limit` points, evenly spaced, the first and the last always kept."""
    ordered = sorted(points)
    if len(ordered) <= limit:
        return list(ordered)
    stride = (len(ordered) - 1) / (limit - 1)
    return [ordered[round(i * stride)] for i in range(limit)]


def record_of(
    job: Mapping[str, Any],
    *,
    events: Sequence[HistoryEvent] = (),
    loss: Sequence[tuple[int, float]] = (),
    eval_loss: Sequence[tuple[int, float]] = (),
    logs: Mapping[str, str] | None = None,
    deleted_at: datetime | None = None,
) -> HistoryRecord:
    """The record of a TrainingJob object (as the API serves it) and what it left behind."""
    meta: Mapping[str, Any] = job.get("metadata") or {}
    spec: dict[str, Any] = dict(job.get("spec") or {})
    status: dict[str, Any] = dict(job.get("status") or {})
    conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
    progress: Mapping[str, Any] = status.get("progress") or {}
    phase = str(status.get("phase") or "Pending")
    reason, message = _ending(phase, conditions)
    curve = thinned(loss)
    final_loss = progress.get("loss")
    if final_loss is None and curve:
        final_loss = curve[-1][1]
    final_step = progress.get("step")
    if final_step is None and curve:
        final_step = curve[-1][0]
    if deleted_at is None and meta.get("deletionTimestamp"):
        deleted_at = _time(meta.get("deletionTimestamp"))
    queueing: Mapping[str, Any] = status.get("queueing") or {}
    return HistoryRecord(
        uid=str(meta.get("uid") or ""),
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        phase=phase,
        reason=reason,
        message=message,
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        queue=spec.get("queue") or queueing.get("localQueue"),
        created_at=_time(meta.get("creationTimestamp")),
        started_at=_time(status.get("startTime")),
        finished_at=_time(status.get("completionTime")) if phase in _FINISHED else None,
        deleted_at=deleted_at,
        restarts=int(status.get("restarts") or 0),
        final_step=None if final_step is None else int(final_step),
        final_loss=None if final_loss is None else float(final_loss),
        spec=spec,
        status=status,
        conditions=conditions,
        events=list(events),
        metrics=HistoryMetrics(
            loss=curve,
            eval_loss=thinned(eval_loss),
            tokens_per_second=progress.get("tokensPerSecond"),
            goodput=goodput_of(status.get("goodput") or {}),
        ),
        logs=dict(logs or {}),
    )


def merged(earlier: HistoryRecord | None, later: HistoryRecord) -> HistoryRecord:
    """`later`, with what only `earlier` had: log tails, curves and events it could not read.

    The capture at deletion is the newer word on status; the one at the job's end may still
    have read pods that are gone by the time the job is deleted.
    """
    if earlier is None:
        return later
    metrics = later.metrics.model_copy(
        update={
            "loss": later.metrics.loss or earlier.metrics.loss,
            "eval_loss": later.metrics.eval_loss or earlier.metrics.eval_loss,
            "tokens_per_second": _first(
                later.metrics.tokens_per_second, earlier.metrics.tokens_per_second
            ),
            "goodput": _first(later.metrics.goodput, earlier.metrics.goodput),
        }
    )
    logs = {**earlier.logs, **{k: v for k, v in later.logs.items() if v}}
    return later.model_copy(
        update={
            "metrics": metrics,
            "logs": logs,
            "events": later.events or earlier.events,
            "finished_at": later.finished_at or earlier.finished_at,
            "deleted_at": later.deleted_at or earlier.deleted_at,
            "final_step": _first(later.final_step, earlier.final_step),
            "final_loss": _first(later.final_loss, earlier.final_loss),
        }
    )


def goodput_of(account: Mapping[str, Any]) -> float | None:
    """Productive over allocated GPU-seconds (status.goodput); None before any is booked."""
    allocated = float(account.get("allocated") or 0)
    if allocated <= 0:
        return None
    return max(0.0, min(1.0, float(account.get("productive") or 0) / allocated))


_FINISHED = ("Succeeded", "Failed")


def _ending(phase: str, conditions: Sequence[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    """The reason and message that say why the job is where it is.

    The condition named after the phase when it holds (Succeeded, Failed ...), else the one
    that changed last.
    """
    for c in conditions:
        if c.get("type") == phase and c.get("status") == "True":
            return c.get("reason"), c.get("message")
    if not conditions:
        return None, None
    last = max(conditions, key=lambda c: str(c.get("lastTransitionTime") or ""))
    return last.get("reason"), last.get("message")


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _first(*values: _T | None) -> _T | None:
    return next((v for v in values if v is not None), None)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return min((t for t in (a, b) if t is not None), default=None)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return max((t for t in (a, b) if t is not None), default=None)
