"""Admission to shared quota: one pure function over queues, their usage and the jobs.

`schedule(queues, jobs, now)` decides, for every job that asks for quota, whether it is
admitted now, must wait (one reason, with numbers), or loses its quota (evicted: preempted,
its gang not ready in time, its queue drained); and, for every job whose eviction finished,
that its quota is released and it waits again. It decides for a cluster (the operator's
leader calls it with the ClusterQueues) and for a laptop (the embedded platform calls it with
one implicit queue the size of the machine). The rules are Kueue's classic ones:

- **Usage** of a ClusterQueue is what its admitted jobs hold, victims included until their
  workers are gone (their quota is released only then, so a victim's checkpoint never races
  the preemptor's workers for the same GPUs).
- **Fit**: a job fits if its whole gang fits at once. Without a cohort, within the nominal
  quota. In a cohort, a queue may also borrow what the other members do not use, up to what
  each lends (`lendingLimit`) and up to its own `borrowingLimit`.
- **Order**: within a queue by priority, then by time (creation; after a pods-ready timeout,
  the eviction). StrictFIFO tries only the head; BestEffortFIFO passes over a job that does
  not fit. Across queues, jobs that fit within nominal quota are admitted before jobs that
  must borrow; within a queue the order holds (a job behind one that must borrow waits its
  turn behind it).
- **Preemption**: a job that does not fit may evict lower-priority jobs of its own queue
  (`withinClusterQueue`) and jobs of cohort members that are borrowing
  (`reclaimWithinCohort`). Candidates from borrowing queues go first, then the lowest
  priority, then the one that would lose the least work (the newest checkpoint or admission).
  Victims are taken greedily until the job fits, then any not needed are given back. A job
  within its `minRuntimeSeconds` or already leaving is never a victim. The capacity the
  victims free is earmarked for the preemptor: a job behind it is admitted only if it fits
  both now (the victims still hold their quota) and once they are gone (the preemptor holds
  its demand), so it never takes what the preemptor waits for and is never kept out by
  capacity counted twice.
- **Pods ready**: a gang not all ready within the queue's timeout of its admission (and never
  all ready since) is evicted and requeued after base·2^(n-1) seconds (capped); past the
  limit the job is deactivated.
- **Pods** count against a queue only if it has a `pods` quota (as in Kueue); any other
  resource a job asks for and its queue has no quota for makes it ExceedsMaxQuota.
- **Capacity**: quotas are promises; `capacity` (optional) is what the cluster has, the
  healthy GPUs of its usable nodes. All queues together never hold more of a capped resource
  than there is, so a node the health agent takes out shrinks what can be admitted at once
  (the waiting reason says how much the cluster has).

Every number is a float in the resource's base unit (GPUs, cores, bytes, pods).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from carina.platform.api.queues import (
    CPU,
    GPU,
    MEMORY,
    PODS,
    ReclaimWithinCohort,
    StopPolicy,
    WithinClusterQueue,
)
from carina.platform.api.reasons import QueueReason

Usage = dict[str, float]
_EPS = 1e-9


@dataclass(frozen=True)
class Quota:
    nominal: float
    borrowing_limit: float | None = None  # None: no limit
    lending_limit: float | None = None  # None: all of it

    @property
    def lendable(self) -> float:
        return self.nominal if self.lending_limit is None else min(self.lending_limit, self.nominal)

    @property
    def guaranteed(self) -> float:
        """The part of nominal no other queue may borrow."""
        return self.nominal - self.lendable


@dataclass(frozen=True)
class QueueInfo:
    """A ClusterQueue as admission reads it."""

    name: str
    quotas: Mapping[str, Quota]
    cohort: str | None = None
    strict_fifo: bool = False
    within: WithinClusterQueue = WithinClusterQueue.NEVER
    reclaim: ReclaimWithinCohort = ReclaimWithinCohort.NEVER
    stop: StopPolicy = StopPolicy.NONE
    pods_ready_timeout: float | None = 600.0  # None: no timeout
    backoff_base: float = 60.0
    backoff_max: float = 3600.0
    backoff_limit: int | None = 5


@dataclass(frozen=True)
class Held:
    """The quota an admitted job holds."""

    queue: str
    usage: Mapping[str, float]
    admitted_at: float
    borrowing: bool = False


@dataclass(frozen=True)
class JobInfo:
    """One job as admission reads it (built from its spec and `status.queueing`)."""

    key: str  # namespace/name
    queue: str | None  # its ClusterQueue, resolved
    demand: Mapping[str, float]  # the whole gang
    priority: int = 0
    timestamp: float = 0.0  # its place in the queue: creation, or its last pods-ready eviction
    misconfigured: str | None = None  # why its queue cannot be resolved
    active: bool = True
    held: Held | None = None
    evicting: str | None = None  # the eviction reason while its workers leave
    evicted_for: str | None = None  # the preemptor it is leaving for
    workers_gone: bool = True  # no worker of the job exists
    all_ready: bool = False  # every worker is ready
    was_ready: bool = False  # every worker was ready at some point since admission
    requeue_count: int = 0
    requeue_at: float | None = None
    min_runtime: float = 0.0
    last_checkpoint_at: float | None = None
    local_stopped: bool = False  # its LocalQueue's stopPolicy holds it


@dataclass(frozen=True)
class Admit:
    queue: str
    usage: Usage
    borrowing: bool


@dataclass(frozen=True)
class Evict:
    reason: QueueReason  # Preempted, PodsReadyTimeout, ClusterQueueStopped
    message: str
    detail: QueueReason | None = None  # InClusterQueue, InCohortReclamation
    preemptor: str | None = None


@dataclass(frozen=True)
class Release:
    """A job whose eviction finished: its quota is free and it waits again."""

    requeue_count: int
    requeue_at: float | None
    deactivated: bool
    message: str


@dataclass(frozen=True)
class Pending:
    reason: QueueReason
    message: str
    position: int | None = None  # 1 = next in its ClusterQueue


@dataclass
class QueueUsage:
    reserved: Usage = field(default_factory=dict)
    borrowed: Usage = field(default_factory=dict)
    admitted: int = 0
    pending: int = 0


@dataclass
class Decisions:
    admit: dict[str, Admit] = field(default_factory=dict)
    evict: dict[str, Evict] = field(default_factory=dict)
    release: dict[str, Release] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    usage: dict[str, QueueUsage] = field(default_factory=dict)


# ---------------------------------------------------------------- quota arithmetic


class Book:
    """Usage of every queue, and the fit rules over it.

    Change usage only through `add`: what `available` answers is remembered until then.
    """

    def __init__(
        self, queues: Mapping[str, QueueInfo], capacity: Mapping[str, float] | None = None
    ) -> None:
        self.queues = queues
        self.capacity = dict(capacity or {})
        self.used: dict[str, Usage] = {name: {} for name in queues}
        self.cohorts: dict[str, list[str]] = {}
        for q in queues.values():
            if q.cohort:
                self.cohorts.setdefault(q.cohort, []).append(q.name)
        self._available: dict[tuple[str, str], float] = {}
        self._most: dict[tuple[str, str], float] = {}  # depends on the quotas alone

    def copy(self) -> Book:
        other = Book.__new__(Book)
        other.queues, other.cohorts, other._most = self.queues, self.cohorts, self._most
        other.capacity = self.capacity
        other.used = {name: dict(u) for name, u in self.used.items()}
        other._available = dict(self._available)
        return other

    def add(self, queue: str, usage: Mapping[str, float], sign: float = 1.0) -> None:
        used = self.used.setdefault(queue, {})
        for r, v in usage.items():
            used[r] = used.get(r, 0.0) + sign * v
        self._available.clear()

    def members(self, queue: str) -> list[str]:
        cohort = self.queues[queue].cohort
        return self.cohorts.get(cohort, [queue]) if cohort else [queue]

    def _used(self, queue: str, r: str) -> float:
        return self.used.get(queue, {}).get(r, 0.0)

    def available(self, queue: str, r: str) -> float:
        """How much of `r` the queue's next job may take now, borrowing included."""
        key = (queue, r)
        avail = self._available.get(key)
        if avail is None:
            avail = self._available[key] = self._compute_available(queue, r)
        return avail

    def _compute_available(self, queue: str, r: str) -> float:
        avail = self._by_quota(queue, r)
        if r in self.capacity:
            avail = min(avail, self.unheld(r))
        return avail

    def unheld(self, r: str) -> float:
        """What the cluster has of `r` that no queue holds (capped resources only)."""
        return self.capacity[r] - sum(u.get(r, 0.0) for u in self.used.values())

    def _by_quota(self, queue: str, r: str) -> float:
        q = self.queues[queue].quotas.get(r)
        if q is None:
            return 0.0
        used = self._used(queue, r)
        if not self.queues[queue].cohort:
            return q.nominal - used
        own = max(0.0, q.guaranteed - used)
        pool = pool_used = 0.0
        for m in self.members(queue):
            mq = self.queues[m].quotas.get(r)
            if mq is None:
                continue
            pool += mq.lendable
            pool_used += max(0.0, self._used(m, r) - mq.guaranteed)
        avail = own + max(0.0, pool - pool_used)
        if q.borrowing_limit is not None:
            avail = min(avail, q.nominal + q.borrowing_limit - used)
        return avail

    def lent_by_cohort(self, queue: str, r: str) -> float:
        """What the other cohort members lend of `r` and do not use."""
        total = 0.0
        for m in self.members(queue):
            mq = self.queues[m].quotas.get(r)
            if m == queue or mq is None:
                continue
            total += max(0.0, mq.lendable - max(0.0, self._used(m, r) - mq.guaranteed))
        return total

    def fits(self, queue: str, demand: Mapping[str, float], borrow: bool = True) -> bool:
        for r, need in demand.items():
            if need <= 0:
                continue
            q = self.queues[queue].quotas.get(r)
            if q is None:
                return False
            if need > self.available(queue, r) + _EPS:
                return False
            if not borrow and self._used(queue, r) + need > q.nominal + _EPS:
                return False
        return True

    def borrowing(self, queue: str, demand: Mapping[str, float] | None = None) -> bool:
        """Whether the queue holds (or, with `demand` added, would hold) more than nominal."""
        for r, q in self.queues[queue].quotas.items():
            extra = (demand or {}).get(r, 0.0)
            if self._used(queue, r) + extra > q.nominal + _EPS:
                return True
        return False

    def most_ever(self, queue: str, r: str) -> float:
        """The most of `r` a job of the queue could ever get (everything else idle)."""
        key = (queue, r)
        most = self._most.get(key)
        if most is None:
            most = self._most[key] = self._compute_most_ever(queue, r)
        return most

    def _compute_most_ever(self, queue: str, r: str) -> float:
        q = self.queues[queue].quotas.get(r)
        if q is None:
            return 0.0
        if not self.queues[queue].cohort:
            return q.nominal
        others = sum(
            self.queues[m].quotas[r].lendable
            for m in self.members(queue)
            if m != queue and r in self.queues[m].quotas
        )
        most = q.nominal + others
        if q.borrowing_limit is not None:
            most = min(most, q.nominal + q.borrowing_limit)
        return most


class _View:
    """Usage now (leaving victims still hold their quota) and later (they are gone, and the
    preemptors they leave for hold their demand instead). A job is admitted only if it fits
    both: it must not take what a preemptor waits for, nor what a victim still holds."""

    def __init__(self, now: Book) -> None:
        self.now = now
        self.later = now.copy()
        # Answers that hold until the next admission or earmark: thousands of waiting jobs
        # ask the same questions (no victims for this shape; this message) of one state.
        self.memo: dict[tuple[object, ...], object] = {}

    def fits(self, queue: str, demand: Mapping[str, float], borrow: bool = True) -> bool:
        return self.now.fits(queue, demand, borrow) and self.later.fits(queue, demand, borrow)

    def available(self, queue: str, r: str) -> float:
        return min(self.now.available(queue, r), self.later.available(queue, r))

    def admit(self, queue: str, demand: Mapping[str, float]) -> None:
        self.now.add(queue, demand)
        self.later.add(queue, demand)
        self.memo.clear()

    def earmark(self, later: Book, queue: str, demand: Mapping[str, float]) -> None:
        """From now on `later` (with `demand` held for a waiting job) is the later view."""
        later.add(queue, demand)
        self.later = later
        self.memo.clear()

    def short(self, queue: str, demand: Mapping[str, float]) -> str:
        key = ("short", queue, *sorted(demand.items()))
        text = self.memo.get(key)
        if text is None:
            text = self.memo[key] = _short(self, queue, demand)
        return str(text)


# ---------------------------------------------------------------- words with numbers

_UNITS = {GPU: "GPUs", CPU: "CPUs", MEMORY: "memory", PODS: "pods"}


def _amount(r: str, v: float) -> str:
    return f"{_num(r, v)} memory" if r == MEMORY else f"{_num(r, v)} {_UNITS.get(r, r)}"


def _short(view: _View, queue: str, demand: Mapping[str, float]) -> str:
    """Which resource keeps the job out, with the numbers a person needs."""
    book = view.now
    for r, need in demand.items():
        avail = max(0.0, view.available(queue, r))
        if need <= 0 or need <= avail + _EPS:
            continue
        q = book.queues[queue].quotas.get(r)
        nominal = q.nominal if q else 0.0
        used = book._used(queue, r)
        free_now = max(0.0, book.available(queue, r))
        text = f"needs {_amount(r, need)}, {_num(r, avail)} available to {queue} now"
        text += f" (nominal {_num(r, nominal)}, {_num(r, used)} in use"
        if free_now - avail > _EPS:
            text += f", {_num(r, free_now - avail)} earmarked for preempting jobs"
        if r in book.capacity:
            text += f"; the cluster's healthy nodes have {_num(r, book.capacity[r])}"
        cohort = book.queues[queue].cohort
        if cohort:
            lent_out = max(0.0, nominal - used - max(0.0, book._by_quota(queue, r)))
            if lent_out > _EPS:
                text += f", {_num(r, lent_out)} lent out"
            text += f"; cohort {cohort} lends {_num(r, book.lent_by_cohort(queue, r))}"
        return text + ")"
    return "does not fit"


def _num(r: str, v: float) -> str:
    if r == MEMORY:
        return f"{v / 2**30:.4g}Gi"
    return str(round(v)) if math.isclose(v, round(v), abs_tol=1e-6) else f"{v:.4g}"


# ---------------------------------------------------------------- the decision


def _order(job: JobInfo) -> tuple[int, float, str]:
    return (-job.priority, job.timestamp, job.key)


def _backoff(q: QueueInfo, count: int) -> float:
    return min(q.backoff_base * 2.0 ** max(0, count - 1), q.backoff_max)


def _demand(q: QueueInfo, demand: Mapping[str, float]) -> Usage:
    """What the job takes of this queue: pods count only where the queue has a pods quota."""
    return {r: v for r, v in demand.items() if r != PODS or r in q.quotas}


def schedule(
    queues: Iterable[QueueInfo],
    jobs: Sequence[JobInfo],
    now: float,
    capacity: Mapping[str, float] | None = None,
) -> Decisions:
    """Every admission decision for this moment (see the module docstring for the rules)."""
    by_name = {q.name: q for q in queues}
    book = Book(by_name, capacity)
    out = Decisions()
    held = [j for j in jobs if j.held is not None and j.held.queue in by_name]
    held_in: dict[str, list[JobInfo]] = {}
    for j in held:
        assert j.held is not None
        book.add(j.held.queue, j.held.usage)
        held_in.setdefault(j.held.queue, []).append(j)

    # 1. Evictions that finished release quota; running gangs may be evicted.
    for j in held:
        assert j.held is not None
        q = by_name[j.held.queue]
        if j.evicting:
            if j.workers_gone:
                book.add(j.held.queue, j.held.usage, -1.0)
                out.release[j.key] = _release(q, j, now)
            continue
        if q.stop == StopPolicy.HOLD_AND_DRAIN:
            out.evict[j.key] = Evict(
                QueueReason.CLUSTER_QUEUE_STOPPED, f"ClusterQueue {q.name} is held and drained"
            )
        elif (
            q.pods_ready_timeout is not None
            and not (j.all_ready or j.was_ready)
            and now - j.held.admitted_at > q.pods_ready_timeout
        ):
            out.evict[j.key] = Evict(
                QueueReason.PODS_READY_TIMEOUT,
                f"the gang was not all ready {q.pods_ready_timeout:g}s after admission",
            )

    # 2. Who waits for what.
    candidates: list[JobInfo] = []
    need: dict[str, Usage] = {}
    for j in jobs:
        if j.held is not None and j.key not in out.release:
            continue
        released = out.release.get(j.key)
        if released is not None:
            if released.deactivated:
                out.pending[j.key] = Pending(QueueReason.DEACTIVATED, released.message)
                continue
            j = _requeued(j, released)
        demand = _demand(by_name[j.queue], j.demand) if j.queue in by_name else dict(j.demand)
        reason = _blocked(j, demand, by_name, book, now)
        if reason is not None:
            out.pending[j.key] = reason
        else:
            candidates.append(j)
            need[j.key] = demand

    # 3. Admit in order; across queues, jobs that must borrow after those that need not; preempt.
    candidates.sort(key=_order)
    victims_of: dict[str, list[JobInfo]] = {}
    for j in held:
        if j.evicting and j.evicted_for and j.key not in out.release:
            victims_of.setdefault(j.evicted_for, []).append(j)
    view = _View(book)
    blocked: dict[str, str] = {}  # StrictFIFO queue -> its head, which waits
    deferred_queues: set[str] = set()  # queues whose next job must borrow
    deferred: list[JobInfo] = []

    def wait_or_preempt(j: JobInfo) -> None:
        assert j.queue is not None
        _preempt_or_wait(out, view, j, need[j.key], held_in, victims_of, now)
        if by_name[j.queue].strict_fifo:
            blocked[j.queue] = j.key

    for j in candidates:
        assert j.queue is not None
        if j.queue in blocked:
            out.pending[j.key] = _behind(j.queue, blocked[j.queue])
        elif j.queue in deferred_queues:
            deferred.append(j)
        elif view.fits(j.queue, need[j.key], borrow=False):
            _admit(out, view, j, need[j.key])
        elif view.fits(j.queue, need[j.key], borrow=True):
            deferred.append(j)
            deferred_queues.add(j.queue)
        else:
            wait_or_preempt(j)
    for j in deferred:
        assert j.queue is not None
        if j.queue in blocked:
            out.pending[j.key] = _behind(j.queue, blocked[j.queue])
        elif view.fits(j.queue, need[j.key], borrow=True):
            _admit(out, view, j, need[j.key])
        else:
            wait_or_preempt(j)

    # 4. Positions and usage.
    waiting: dict[str, list[JobInfo]] = {}
    for j in candidates:
        if j.key in out.pending and j.queue is not None:
            waiting.setdefault(j.queue, []).append(j)
    for js in waiting.values():
        for i, j in enumerate(js, start=1):  # candidates are in order already
            p = out.pending[j.key]
            out.pending[j.key] = Pending(p.reason, p.message, i)
    for name, q in by_name.items():
        u = QueueUsage()
        for r, quota in q.quotas.items():
            used = book._used(name, r)
            u.reserved[r] = used
            u.borrowed[r] = max(0.0, used - quota.nominal)
        out.usage[name] = u
    for j in jobs:
        if j.held is not None and j.key not in out.release and j.held.queue in out.usage:
            out.usage[j.held.queue].admitted += 1
        elif j.key in out.admit:
            out.usage[out.admit[j.key].queue].admitted += 1
        elif (
            j.key in out.pending
            and j.queue in out.usage
            and out.pending[j.key].reason != QueueReason.DEACTIVATED
        ):
            out.usage[j.queue].pending += 1
    return out


def _behind(queue: str, head: str) -> Pending:
    return Pending(
        QueueReason.WAITING_FOR_QUOTA,
        f"waiting behind {head}, the head of StrictFIFO queue {queue}, which cannot start yet",
    )


def _release(q: QueueInfo, j: JobInfo, now: float) -> Release:
    if j.evicting != QueueReason.PODS_READY_TIMEOUT:
        return Release(j.requeue_count, None, False, f"requeued after {j.evicting}")
    count = j.requeue_count + 1
    if q.backoff_limit is not None and count > q.backoff_limit:
        return Release(
            count,
            None,
            True,
            f"deactivated: its gang was not ready in time {count} times"
            f" (limit {q.backoff_limit}); suspend and resume the job to try again",
        )
    wait = _backoff(q, count)
    return Release(count, now + wait, False, f"requeued in {wait:g}s (attempt {count})")


def _requeued(j: JobInfo, released: Release) -> JobInfo:
    timestamp = j.timestamp
    if j.evicting == QueueReason.PODS_READY_TIMEOUT and released.requeue_at is not None:
        timestamp = released.requeue_at  # a gang that could not start goes to the back
    return replace(
        j,
        held=None,
        evicting=None,
        evicted_for=None,
        requeue_count=released.requeue_count,
        requeue_at=released.requeue_at,
        timestamp=timestamp,
    )


def _blocked(
    j: JobInfo,
    demand: Mapping[str, float],
    queues: Mapping[str, QueueInfo],
    book: Book,
    now: float,
) -> Pending | None:
    """The first reason in precedence that keeps the job from being tried at all."""
    if not j.active:
        return Pending(QueueReason.DEACTIVATED, "the job was deactivated")
    if j.misconfigured or j.queue is None or j.queue not in queues:
        return Pending(
            QueueReason.MISCONFIGURED, j.misconfigured or f"ClusterQueue {j.queue} does not exist"
        )
    q = queues[j.queue]
    if q.stop != StopPolicy.NONE or j.local_stopped:
        what = f"ClusterQueue {q.name}" if q.stop != StopPolicy.NONE else "its LocalQueue"
        return Pending(QueueReason.STOPPED, f"{what} is held (stopPolicy)")
    if j.requeue_at is not None and j.requeue_at > now:
        return Pending(
            QueueReason.BACKOFF_REQUEUE,
            f"requeued after its gang was not ready in time; tried again in"
            f" {j.requeue_at - now:.0f}s (attempt {j.requeue_count + 1})",
        )
    for r, need in demand.items():
        if need <= 0:
            continue
        if r not in q.quotas:
            return Pending(
                QueueReason.EXCEEDS_MAX_QUOTA,
                f"needs {_amount(r, need)}; ClusterQueue {q.name} has no quota for {r}",
            )
        most = book.most_ever(q.name, r)
        if need > most + _EPS:
            where = f"{q.name} and its cohort" if q.cohort else q.name
            return Pending(
                QueueReason.EXCEEDS_MAX_QUOTA,
                f"needs {_amount(r, need)}, more than {where} can ever hold ({_num(r, most)})",
            )
    return None


def _admit(out: Decisions, view: _View, j: JobInfo, demand: Usage) -> None:
    assert j.queue is not None
    borrowing = view.now.borrowing(j.queue, demand)
    view.admit(j.queue, demand)
    out.admit[j.key] = Admit(j.queue, dict(demand), borrowing)


def _preempt_or_wait(
    out: Decisions,
    view: _View,
    j: JobInfo,
    demand: Usage,
    held_in: Mapping[str, Sequence[JobInfo]],
    victims_of: Mapping[str, Sequence[JobInfo]],
    now: float,
) -> None:
    """Evict the fewest victims that make room for `j`, or say why it waits.

    Whatever `j` waits for once its victims are gone is earmarked in `view.later`.
    """
    assert j.queue is not None
    leaving = [v for v in victims_of.get(j.key, ()) if v.held is not None]
    after = view.later  # what jobs ahead of it earmarked is not its to take
    if leaving:
        after = after.copy()
        for v in leaving:
            assert v.held is not None
            after.add(v.held.queue, v.held.usage, -1.0)
        if after.fits(j.queue, demand):
            view.earmark(after, j.queue, demand)
            out.pending[j.key] = Pending(
                QueueReason.WAITING_FOR_PREEMPTED,
                f"waiting for {len(leaving)} preempted job(s) to save a checkpoint and leave:"
                f" {', '.join(sorted(v.key for v in leaving))}",
            )
            return
    elif after.fits(j.queue, demand):
        # It fits once the jobs already leaving are gone: wait for them, preempt no one.
        out.pending[j.key] = Pending(
            QueueReason.WAITING_FOR_PREEMPTED,
            f"{view.short(j.queue, demand)}; it fits once the preempted jobs leaving"
            " have saved a checkpoint and left",
        )
        view.earmark(after, j.queue, demand)
        return
    # The victims depend on the state, the job's queue, priority, demand and (only where equal
    # priorities may be preempted) its place: a search that failed fails again for the same.
    newer_equal = (
        view.now.queues[j.queue].within == WithinClusterQueue.LOWER_OR_NEWER_EQUAL_PRIORITY
    )
    key: tuple[object, ...] = ("no victims", j.queue, j.priority)
    key += (j.timestamp if newer_equal else None, *sorted(demand.items()))
    chosen = None if key in view.memo else _victims(after, j, demand, held_in, out, now)
    if chosen is None:
        if not leaving:
            view.memo[key] = True
        out.pending[j.key] = Pending(QueueReason.WAITING_FOR_QUOTA, view.short(j.queue, demand))
        return
    for v, detail in chosen:
        out.evict[v.key] = Evict(
            QueueReason.PREEMPTED,
            f"preempted by {j.key} (priority {j.priority}) to free quota in {j.queue}",
            detail,
            j.key,
        )
    if after is view.later:
        after = after.copy()
    for v, _ in chosen:
        assert v.held is not None
        after.add(v.held.queue, v.held.usage, -1.0)
    view.earmark(after, j.queue, demand)  # no job behind it takes what its victims free
    out.pending[j.key] = Pending(
        QueueReason.WAITING_FOR_PREEMPTED,
        f"preempting {len(chosen)} job(s) that save a checkpoint first:"
        f" {', '.join(sorted(v.key for v, _ in chosen))}",
    )


def _victims(
    book: Book,
    j: JobInfo,
    demand: Usage,
    held_in: Mapping[str, Sequence[JobInfo]],
    out: Decisions,
    now: float,
) -> list[tuple[JobInfo, QueueReason]] | None:
    assert j.queue is not None
    q = book.queues[j.queue]
    if q.within == WithinClusterQueue.NEVER and q.reclaim == ReclaimWithinCohort.NEVER:
        return None
    pool: list[JobInfo] = []
    if q.within != WithinClusterQueue.NEVER:
        pool.extend(held_in.get(j.queue, ()))
    if q.reclaim != ReclaimWithinCohort.NEVER:
        for m in book.members(j.queue):
            if m != j.queue and book.borrowing(m):
                pool.extend(held_in.get(m, ()))
    candidates: list[tuple[JobInfo, QueueReason]] = []
    for v in pool:
        if v.held is None or v.evicting or v.key in out.evict or v.key in out.release:
            continue
        if now - v.held.admitted_at < v.min_runtime:
            continue
        lower = v.priority < j.priority
        if v.held.queue == j.queue:
            newer_equal = v.priority == j.priority and v.timestamp > j.timestamp
            allowed = (q.within == WithinClusterQueue.LOWER_PRIORITY and lower) or (
                q.within == WithinClusterQueue.LOWER_OR_NEWER_EQUAL_PRIORITY
                and (lower or newer_equal)
            )
            if allowed:
                candidates.append((v, QueueReason.IN_CLUSTER_QUEUE))
        elif q.reclaim == ReclaimWithinCohort.ANY or lower:
            candidates.append((v, QueueReason.IN_COHORT_RECLAMATION))
    if not candidates:
        return None

    def lost_work_since(v: JobInfo) -> float:
        assert v.held is not None
        return max(v.held.admitted_at, v.last_checkpoint_at or -math.inf)

    candidates.sort(
        key=lambda c: (
            c[0].held.queue == j.queue,  # type: ignore[union-attr]
            c[0].priority,
            -lost_work_since(c[0]),
            c[0].key,
        )
    )
    trial = book.copy()
    chosen: list[tuple[JobInfo, QueueReason]] = []
    for v, detail in candidates:
        assert v.held is not None
        if v.held.queue != j.queue and not trial.borrowing(v.held.queue):
            continue  # reclaim only what the other queue borrowed
        trial.add(v.held.queue, v.held.usage, -1.0)
        chosen.append((v, detail))
        borrow = all(c.held is not None and c.held.queue == j.queue for c, _ in chosen)
        if trial.fits(j.queue, demand, borrow=borrow):
            break
    else:
        return None
    # Give back every victim the job does not need, newest choice first.
    for pick in reversed(list(chosen)):
        v = pick[0]
        assert v.held is not None
        trial.add(v.held.queue, v.held.usage)
        rest = [c for c in chosen if c is not pick]
        borrow = all(c.held is not None and c.held.queue == j.queue for c, _ in rest)
        if rest and trial.fits(j.queue, demand, borrow=borrow):
            chosen = rest
        else:
            trial.add(v.held.queue, v.held.usage, -1.0)
    return chosen
