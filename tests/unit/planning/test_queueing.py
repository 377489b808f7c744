"""Admission to shared quota (`planning.queueing.schedule`): Kueue's classic rules.

Each test builds ClusterQueues and jobs with the small helpers below, runs one round of
`schedule` and checks what a person would see: who is admitted (borrowing or not), who is
evicted and why, each waiting job's reason, its message with numbers and its position, and
the queues' usage. The scenario list is the admission part of ../shared/notes/queueing.md §7.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from carina.platform.api.queues import (
    CPU,
    GPU,
    MEMORY,
    PODS,
    ReclaimWithinCohort,
    StopPolicy,
    WithinClusterQueue,
)
from carina.platform.api.reasons import PENDING_PRECEDENCE, QueueReason
from carina.platform.planning.queueing import (
    Decisions,
    Held,
    JobInfo,
    QueueInfo,
    Quota,
    schedule,
)

NOW = 10_000.0
LOWER = WithinClusterQueue.LOWER_PRIORITY
NEWER_EQUAL = WithinClusterQueue.LOWER_OR_NEWER_EQUAL_PRIORITY
ANY = ReclaimWithinCohort.ANY


# ---------------------------------------------------------------- builders


def cq(
    name: str,
    gpus: float | None = 8,
    *,
    cohort: str | None = None,
    borrow: float | None = None,
    lend: float | None = None,
    extra: dict[str, Quota] | None = None,
    **kw: Any,
) -> QueueInfo:
    """A ClusterQueue with a GPU quota (and any `extra` ones)."""
    quotas = dict(extra or {})
    if gpus is not None:
        quotas[GPU] = Quota(gpus, borrow, lend)
    return QueueInfo(name=name, quotas=quotas, cohort=cohort, **kw)


def job(
    key: str, gpus: float = 0, queue: str | None = "a", *, t: float = 0.0, **kw: Any
) -> JobInfo:
    """A pending job asking for `gpus` GPUs (plus any other resources in `demand`)."""
    demand = {GPU: float(gpus), **kw.pop("demand", {})}
    return JobInfo(key=key, queue=queue, demand=demand, timestamp=t, **kw)


def running(
    key: str,
    gpus: float,
    queue: str = "a",
    *,
    admitted: float = 0.0,
    t: float = 0.0,
    **kw: Any,
) -> JobInfo:
    """An admitted job whose gang is all ready (unless told otherwise)."""
    demand = {GPU: float(gpus), **kw.pop("demand", {})}
    kw.setdefault("all_ready", True)
    kw.setdefault("workers_gone", False)
    return JobInfo(
        key=key,
        queue=queue,
        demand=demand,
        timestamp=t,
        held=Held(queue, dict(demand), admitted),
        **kw,
    )


def leaving(key: str, gpus: float, queue: str = "a", *, reason: str, **kw: Any) -> JobInfo:
    """An admitted job whose eviction was decided; its workers are (or are not yet) gone."""
    kw.setdefault("workers_gone", True)
    return running(key, gpus, queue, evicting=reason, **kw)


def run(queues: list[QueueInfo], jobs: list[JobInfo], now: float = NOW) -> Decisions:
    return schedule(queues, jobs, now)


def reasons(d: Decisions) -> dict[str, str]:
    return {k: p.reason.value for k, p in d.pending.items()}


# ---------------------------------------------------------------- fit, borrowing, lending


def test_a_job_asking_for_exactly_the_free_quota_is_admitted_without_borrowing() -> None:
    d = run([cq("a", 8)], [running("r", 3), job("j", 5)])
    assert set(d.admit) == {"j"}
    assert d.admit["j"].queue == "a"
    assert d.admit["j"].usage == {GPU: 5}
    assert d.admit["j"].borrowing is False
    assert d.usage["a"].reserved[GPU] == 8
    assert d.usage["a"].borrowed[GPU] == 0


def test_a_job_one_gpu_over_the_free_quota_waits_and_says_by_how_much() -> None:
    d = run([cq("a", 8)], [running("r", 3), job("j", 6)])
    assert d.admit == {}
    p = d.pending["j"]
    assert p.reason == QueueReason.WAITING_FOR_QUOTA
    assert p.message == "needs 6 GPUs, 5 available to a now (nominal 8, 3 in use)"
    assert p.position == 1


def test_borrowing_stops_at_the_borrowing_limit() -> None:
    queues = [cq("a", 8, cohort="c", borrow=2), cq("b", 8, cohort="c")]
    d = run(queues, [job("ten", 10), job("eleven", 11, t=1)])
    assert d.admit["ten"].borrowing is True
    assert d.usage["a"].borrowed[GPU] == 2
    p = d.pending["eleven"]
    assert p.reason == QueueReason.EXCEEDS_MAX_QUOTA
    assert p.message == "needs 11 GPUs, more than a and its cohort can ever hold (10)"

    # With 10 held, one more GPU is over the limit although b lends 6 more.
    d = run(queues, [running("ten", 10), job("one", 1)])
    assert d.pending["one"].reason == QueueReason.WAITING_FOR_QUOTA
    assert "0 available to a now" in d.pending["one"].message


def test_a_lending_limit_caps_what_the_cohort_may_borrow_and_keeps_the_rest() -> None:
    queues = [cq("a", 8, cohort="c"), cq("b", 8, cohort="c", lend=2)]
    d = run(queues, [job("a10", 10), job("a11", 11, t=1)])
    assert d.admit["a10"].borrowing is True
    assert d.pending["a11"].message == (
        "needs 11 GPUs, more than a and its cohort can ever hold (10)"
    )

    # b's six GPUs that it does not lend are its own, even with a borrowing the other two.
    d = run(queues, [running("a10", 10), job("b6", 6, "b")])
    assert d.admit["b6"].borrowing is False
    d = run(queues, [running("a10", 10), job("b7", 7, "b")])
    assert d.pending["b7"].reason == QueueReason.WAITING_FOR_QUOTA
    assert d.pending["b7"].message == (
        "needs 7 GPUs, 6 available to b now (nominal 8, 0 in use, 2 lent out; cohort c lends 0)"
    )


def test_unset_limits_let_a_queue_borrow_everything_the_cohort_does_not_use() -> None:
    queues = [cq("a", 8, cohort="c"), cq("b", 8, cohort="c"), cq("x", 8, cohort="c")]
    d = run(queues, [running("x", 3, "x"), job("big", 21)])
    assert d.admit["big"].borrowing is True
    assert d.usage["a"].reserved[GPU] == 21
    assert d.usage["a"].borrowed[GPU] == 13
    d = run(queues, [running("x", 3, "x"), job("bigger", 22)])
    assert d.pending["bigger"].reason == QueueReason.WAITING_FOR_QUOTA
    assert d.pending["bigger"].message == (
        "needs 22 GPUs, 21 available to a now (nominal 8, 0 in use; cohort c lends 13)"
    )


def test_a_gang_must_fit_in_every_resource_at_once() -> None:
    q = cq("a", 8, extra={CPU: Quota(32), MEMORY: Quota(256 * 2**30)})
    held = running("r", 2, demand={CPU: 20.0, MEMORY: 64 * 2**30})
    d = run(
        [q],
        [
            held,
            job("cpu-short", 4, demand={CPU: 16.0, MEMORY: 2**30}),
            job("mem-short", 4, demand={CPU: 4.0, MEMORY: 200 * 2**30}, t=1),
            job("fits", 6, demand={CPU: 12.0, MEMORY: 192 * 2**30}, t=2),
        ],
    )
    assert set(d.admit) == {"fits"}
    assert d.pending["cpu-short"].message == (
        "needs 16 CPUs, 12 available to a now (nominal 32, 20 in use)"
    )
    assert d.pending["mem-short"].message == (
        "needs 200Gi memory, 192Gi available to a now (nominal 256Gi, 64Gi in use)"
    )
    assert d.usage["a"].reserved == {GPU: 8, CPU: 32, MEMORY: 256 * 2**30}


def test_pods_count_only_against_a_queue_with_a_pods_quota() -> None:
    counted = cq("a", 8, extra={PODS: Quota(4)})
    d = run([counted], [running("r", 1, demand={PODS: 3.0}), job("two", 1, demand={PODS: 2.0})])
    assert d.pending["two"].reason == QueueReason.WAITING_FOR_QUOTA
    assert d.pending["two"].message == "needs 2 pods, 1 available to a now (nominal 4, 3 in use)"

    # A queue with no pods quota (the embedded machine's) admits by GPUs alone.
    d = run([cq("a", 8)], [job("two", 1, demand={PODS: 2.0})])
    assert d.admit["two"].usage == {GPU: 1}


def test_when_the_whole_cohort_is_in_use_nothing_more_is_admitted() -> None:
    queues = [cq("a", 4, cohort="c"), cq("b", 4, cohort="c")]
    d = run(queues, [running("a4", 4, "a"), running("b4", 4, "b"), job("one", 1)])
    assert d.admit == {}
    assert d.pending["one"].message == (
        "needs 1 GPUs, 0 available to a now (nominal 4, 4 in use; cohort c lends 0)"
    )


def test_a_lowered_quota_evicts_no_one_and_admits_nothing_until_usage_fits() -> None:
    d = run([cq("a", 4)], [running("r", 6), job("j", 1)])
    assert d.evict == {}
    assert d.pending["j"].message == "needs 1 GPUs, 0 available to a now (nominal 4, 6 in use)"
    assert d.usage["a"].borrowed[GPU] == 2


# ---------------------------------------------------------------- ordering


def test_higher_priority_is_admitted_first_whatever_its_age() -> None:
    d = run([cq("a", 4)], [job("old-low", 4, t=0), job("new-high", 4, t=50, priority=5)])
    assert set(d.admit) == {"new-high"}
    assert d.pending["old-low"].position == 1


def test_equal_priorities_are_first_come_first_served() -> None:
    d = run([cq("a", 4)], [job("second", 4, t=2), job("first", 4, t=1), job("third", 4, t=3)])
    assert set(d.admit) == {"first"}
    assert d.pending["second"].position == 1
    assert d.pending["third"].position == 2


def test_strict_fifo_holds_everyone_behind_a_head_that_does_not_fit() -> None:
    jobs = [running("r", 4), job("big", 6, t=1), job("small", 2, t=2)]
    d = run([cq("a", 8, strict_fifo=True)], jobs)
    assert d.admit == {}
    assert d.pending["big"].reason == QueueReason.WAITING_FOR_QUOTA
    assert d.pending["small"].reason == QueueReason.WAITING_FOR_QUOTA
    assert "waiting behind big, the head of StrictFIFO queue a" in d.pending["small"].message
    assert (d.pending["big"].position, d.pending["small"].position) == (1, 2)


def test_best_effort_fifo_passes_over_a_job_that_does_not_fit() -> None:
    jobs = [running("r", 4), job("big", 6, t=1), job("small", 2, t=2)]
    d = run([cq("a", 8)], jobs)
    assert set(d.admit) == {"small"}
    assert d.pending["big"].position == 1


def test_a_strict_fifo_head_that_borrows_lets_the_next_one_in_the_same_round() -> None:
    queues = [cq("a", 4, cohort="c", strict_fifo=True), cq("b", 4, cohort="c")]
    d = run(queues, [job("head", 6, t=1), job("next", 2, t=2)])
    assert set(d.admit) == {"head", "next"}
    assert d.admit["head"].borrowing is True


def test_a_preempted_job_keeps_its_place_when_it_is_requeued() -> None:
    # Its preemptor is gone; the victim's workers have left; it is older than the newcomer.
    victim = leaving("victim", 4, reason=QueueReason.PREEMPTED, evicted_for="gone", t=0)
    d = run([cq("a", 4)], [victim, job("newcomer", 4, t=500)])
    assert d.release["victim"].requeue_at is None
    assert d.release["victim"].requeue_count == 0
    assert set(d.admit) == {"victim"}
    assert d.pending["newcomer"].position == 1


def test_a_job_whose_gang_was_not_ready_in_time_goes_to_the_back() -> None:
    q = cq("a", 4, backoff_base=0)
    timed_out = leaving("slow", 4, reason=QueueReason.PODS_READY_TIMEOUT, t=0, all_ready=False)
    d = run([q], [timed_out, job("newcomer", 4, t=500)])
    assert d.release["slow"].requeue_count == 1
    assert set(d.admit) == {"newcomer"}
    assert d.pending["slow"].position == 1


def test_jobs_that_fit_in_nominal_quota_go_before_jobs_that_must_borrow() -> None:
    queues = [cq("a", 4, cohort="c"), cq("b", 4, cohort="c")]
    # a's job is older and of higher priority but needs two of b's GPUs.
    d = run(queues, [job("borrower", 6, "a", priority=10, t=0), job("own", 4, "b", t=9)])
    assert set(d.admit) == {"own"}
    assert d.admit["own"].borrowing is False
    assert d.pending["borrower"].reason == QueueReason.WAITING_FOR_QUOTA
    assert d.pending["borrower"].message == (
        "needs 6 GPUs, 4 available to a now (nominal 4, 0 in use; cohort c lends 0)"
    )


def test_within_a_queue_a_lower_job_does_not_overtake_one_that_must_borrow() -> None:
    queues = [cq("a", 4, cohort="c"), cq("b", 4, cohort="c")]
    d = run(queues, [job("high", 6, priority=10, t=0), job("low", 3, t=1)])
    assert set(d.admit) == {"high"}
    assert d.admit["high"].borrowing is True
    assert d.pending["low"].reason == QueueReason.WAITING_FOR_QUOTA
    assert d.pending["low"].position == 1


# ---------------------------------------------------------------- preemption


def test_lower_priority_preempts_only_strictly_lower_jobs() -> None:
    q = cq("a", 8, within=LOWER)
    d = run([q], [running("low", 8, priority=0), job("high", 4, priority=5)])
    assert set(d.evict) == {"low"}
    e = d.evict["low"]
    assert (e.reason, e.detail, e.preemptor) == (
        QueueReason.PREEMPTED,
        QueueReason.IN_CLUSTER_QUEUE,
        "high",
    )
    assert e.message == "preempted by high (priority 5) to free quota in a"
    assert d.pending["high"].reason == QueueReason.WAITING_FOR_PREEMPTED
    assert d.pending["high"].message == "preempting 1 job(s) that save a checkpoint first: low"
    assert d.admit == {}

    d = run([q], [running("same", 8, priority=5, t=10), job("newer-or-older", 4, priority=5)])
    assert d.evict == {}
    assert d.pending["newer-or-older"].reason == QueueReason.WAITING_FOR_QUOTA


def test_lower_or_newer_equal_priority_also_preempts_a_newer_job_of_equal_priority() -> None:
    jobs = [running("newer", 8, t=10), job("older", 4, t=5)]
    d = run([cq("a", 8, within=NEWER_EQUAL)], jobs)
    assert set(d.evict) == {"newer"}
    jobs = [running("older", 8, t=5), job("newer", 4, t=10)]
    d = run([cq("a", 8, within=NEWER_EQUAL)], jobs)
    assert d.evict == {}
    assert d.pending["newer"].reason == QueueReason.WAITING_FOR_QUOTA


def test_reclaim_takes_back_only_what_the_other_queue_borrowed() -> None:
    queues = [cq("a", 4, cohort="c", reclaim=ANY), cq("b", 4, cohort="c")]
    b_jobs = [running(f"b{i}", 2, "b", admitted=float(i), priority=5) for i in range(3)]
    d = run(queues, [*b_jobs, job("mine", 4, priority=0)])
    # b holds 6 of its 4: the newest of its jobs goes, and a's job then fits its own quota.
    assert set(d.evict) == {"b2"}
    assert d.evict["b2"].detail == QueueReason.IN_COHORT_RECLAMATION
    assert d.pending["mine"].reason == QueueReason.WAITING_FOR_PREEMPTED

    # b within its nominal quota is not borrowing: nothing of it is reclaimed.
    d = run(queues, [running("a2", 2, "a"), *b_jobs[:2], job("mine", 4)])
    assert d.evict == {}
    assert d.pending["mine"].reason == QueueReason.WAITING_FOR_QUOTA


def test_reclaim_lower_priority_spares_an_equal_or_higher_borrower() -> None:
    queues = [
        cq("a", 4, cohort="c", reclaim=ReclaimWithinCohort.LOWER_PRIORITY),
        cq("b", 4, cohort="c"),
    ]
    d = run(queues, [running("b8", 8, "b", priority=3), job("mine", 4, priority=3)])
    assert d.evict == {}
    d = run(queues, [running("b8", 8, "b", priority=2), job("mine", 4, priority=3)])
    assert set(d.evict) == {"b8"}


def test_reclaiming_never_lets_the_preemptor_borrow() -> None:
    queues = [cq("a", 4, cohort="c", reclaim=ANY), cq("b", 4, cohort="c")]
    b_jobs = [running("b1", 3, "b", admitted=1), running("b2", 3, "b", admitted=2)]
    d = run(queues, [*b_jobs, job("six", 6, priority=9)])
    # Taking b2 back leaves b within its quota, and six would still need to borrow 2.
    assert d.evict == {}
    assert d.pending["six"].reason == QueueReason.WAITING_FOR_QUOTA
    assert d.pending["six"].message == (
        "needs 6 GPUs, 2 available to a now (nominal 4, 0 in use, 2 lent out; cohort c lends 0)"
    )


def test_a_job_that_fits_once_leaving_jobs_are_gone_waits_and_preempts_no_one() -> None:
    jobs = [
        leaving("low", 6, reason=QueueReason.PREEMPTED, evicted_for="high", workers_gone=False),
        running("small-low", 1, priority=0),
        job("high", 4, priority=10),
        job("mid", 5, priority=5),
        job("lower", 3, priority=1),
    ]
    d = run([cq("a", 10, within=LOWER)], jobs)
    assert d.evict == {}
    assert d.admit == {}
    assert d.pending["high"].reason == QueueReason.WAITING_FOR_PREEMPTED
    assert d.pending["mid"].reason == QueueReason.WAITING_FOR_PREEMPTED
    assert d.pending["mid"].message == (
        "needs 5 GPUs, 3 available to a now (nominal 10, 7 in use); it fits once the"
        " preempted jobs leaving have saved a checkpoint and left"
    )
    # lower fits the 3 free now, but once low is gone high and mid hold all but 2.
    assert d.pending["lower"].reason == QueueReason.WAITING_FOR_QUOTA
    assert [d.pending[k].position for k in ("high", "mid", "lower")] == [1, 2, 3]


def test_a_queue_that_never_preempts_waits_for_quota() -> None:
    d = run([cq("a", 8)], [running("low", 8, priority=0), job("high", 4, priority=9)])
    assert d.evict == {}
    assert d.pending["high"].reason == QueueReason.WAITING_FOR_QUOTA
    assert d.pending["high"].message == "needs 4 GPUs, 0 available to a now (nominal 8, 8 in use)"


def test_the_victims_are_the_fewest_that_make_room() -> None:
    # Greedy takes the lowest first (small), then mid; small turns out not to be needed.
    jobs = [
        running("small", 2, priority=0),
        running("mid", 6, priority=1),
        job("high", 6, priority=9),
    ]
    d = run([cq("a", 8, within=LOWER)], jobs)
    assert set(d.evict) == {"mid"}
    assert d.pending["high"].message == "preempting 1 job(s) that save a checkpoint first: mid"


def test_the_victim_that_loses_the_least_work_goes_first() -> None:
    jobs = [
        running("checkpointed-recently", 4, admitted=100, last_checkpoint_at=NOW - 60),
        running("admitted-later", 4, admitted=NOW - 600),
        running("admitted-earlier", 4, admitted=NOW - 3000),
        job("high", 4, priority=9),
    ]
    d = run([cq("a", 12, within=LOWER)], jobs)
    assert set(d.evict) == {"checkpointed-recently"}
    d = run([cq("a", 8, within=LOWER)], [j for j in jobs if j.key != "checkpointed-recently"])
    assert set(d.evict) == {"admitted-later"}


def test_a_job_within_its_minimum_runtime_is_never_a_victim() -> None:
    protected = running("young", 8, admitted=NOW - 100, min_runtime=300)
    d = run([cq("a", 8, within=LOWER)], [protected, job("high", 4, priority=9)])
    assert d.evict == {}
    assert d.pending["high"].reason == QueueReason.WAITING_FOR_QUOTA
    old_enough = running("young", 8, admitted=NOW - 301, min_runtime=300)
    d = run([cq("a", 8, within=LOWER)], [old_enough, job("high", 4, priority=9)])
    assert set(d.evict) == {"young"}


def test_a_job_already_leaving_is_not_chosen_again() -> None:
    jobs = [
        leaving("going", 4, reason=QueueReason.PREEMPTED, evicted_for="other", workers_gone=False),
        running("staying", 4, admitted=100),
        job("high", 4, priority=9),
    ]
    d = run([cq("a", 8, within=LOWER)], jobs)
    assert set(d.evict) == {"staying"}
    assert "going" not in d.release


def test_what_victims_free_is_earmarked_for_their_preemptor() -> None:
    q = cq("a", 10, within=LOWER)
    jobs = [
        running("low", 6, priority=0),
        job("high", 8, priority=10, t=0),
        job("mid-3", 3, priority=5, t=1),
        job("mid-2", 2, priority=5, t=2),
    ]
    d = run([q], jobs)
    assert set(d.evict) == {"low"}
    # 4 GPUs are free now, but only 2 stay free once low is gone and high holds 8.
    assert set(d.admit) == {"mid-2"}
    assert d.pending["mid-3"].reason == QueueReason.WAITING_FOR_QUOTA
    assert d.pending["mid-3"].message == (
        "needs 3 GPUs, 2 available to a now (nominal 10, 6 in use, 2 earmarked for preempting jobs)"
    )

    # A round later, low still saving: the earmark still holds against a newcomer.
    jobs = [
        leaving("low", 6, reason=QueueReason.PREEMPTED, evicted_for="high", workers_gone=False),
        job("high", 8, priority=10, t=0),
        job("mid-3", 3, priority=5, t=1),
    ]
    d = run([q], jobs)
    assert d.admit == {}
    assert d.pending["mid-3"].reason == QueueReason.WAITING_FOR_QUOTA


def test_with_no_set_of_victims_that_makes_room_the_job_waits_for_quota() -> None:
    jobs = [
        running("low", 2, priority=0),
        running("peer", 6, priority=9),
        job("high", 4, priority=9),
    ]
    d = run([cq("a", 8, within=LOWER)], jobs)
    assert d.evict == {}
    assert d.pending["high"].reason == QueueReason.WAITING_FOR_QUOTA
    assert d.pending["high"].message == "needs 4 GPUs, 0 available to a now (nominal 8, 8 in use)"


def test_a_preemptor_whose_victims_are_leaving_waits_and_chooses_no_more() -> None:
    jobs = [
        leaving("low", 4, reason=QueueReason.PREEMPTED, evicted_for="high", workers_gone=False),
        running("other-low", 4, priority=0),
        job("high", 4, priority=9),
    ]
    d = run([cq("a", 8, within=LOWER)], jobs)
    assert d.evict == {}
    assert d.admit == {}
    assert d.pending["high"].reason == QueueReason.WAITING_FOR_PREEMPTED
    assert d.pending["high"].message == (
        "waiting for 1 preempted job(s) to save a checkpoint and leave: low"
    )


def test_a_victims_quota_is_released_only_once_its_workers_are_gone() -> None:
    q = cq("a", 8, within=LOWER)
    victim = {"reason": QueueReason.PREEMPTED, "evicted_for": "high"}
    d = run([q], [leaving("low", 8, workers_gone=False, **victim), job("high", 8, priority=9)])
    assert d.release == {}
    assert d.usage["a"].reserved[GPU] == 8
    assert d.usage["a"].admitted == 1

    d = run([q], [leaving("low", 8, workers_gone=True, **victim), job("high", 8, priority=9)])
    assert d.release["low"].message == "requeued after Preempted"
    assert set(d.admit) == {"high"}
    assert d.pending["low"].reason == QueueReason.WAITING_FOR_QUOTA
    assert d.usage["a"].reserved[GPU] == 8
    assert (d.usage["a"].admitted, d.usage["a"].pending) == (1, 1)


# ---------------------------------------------------------------- pods ready


def test_a_gang_not_ready_in_time_is_evicted() -> None:
    q = cq("a", 8)
    slow = running("slow", 4, admitted=NOW - 601, all_ready=False)
    d = run([q], [slow])
    assert d.evict["slow"].reason == QueueReason.PODS_READY_TIMEOUT
    assert d.evict["slow"].message == "the gang was not all ready 600s after admission"
    assert d.usage["a"].reserved[GPU] == 4  # held until its workers are gone

    in_time = running("slow", 4, admitted=NOW - 599, all_ready=False)
    assert run([q], [in_time]).evict == {}
    # A gang that was all ready once and restarts later is not timed out.
    restarted = running("slow", 4, admitted=NOW - 7200, all_ready=False, was_ready=True)
    assert run([q], [restarted]).evict == {}
    assert run([cq("a", 8, pods_ready_timeout=None)], [slow]).evict == {}


@pytest.mark.parametrize(
    ("count_before", "wait"), [(0, 60), (1, 120), (2, 240), (3, 480), (6, 3600), (9, 3600)]
)
def test_a_timed_out_gang_is_requeued_after_a_doubling_capped_backoff(
    count_before: int, wait: float
) -> None:
    q = cq("a", 8, backoff_limit=None)
    slow = leaving("slow", 4, reason=QueueReason.PODS_READY_TIMEOUT, requeue_count=count_before)
    d = run([q], [slow])
    r = d.release["slow"]
    assert (r.requeue_count, r.requeue_at, r.deactivated) == (count_before + 1, NOW + wait, False)
    assert r.message == f"requeued in {wait:g}s (attempt {count_before + 1})"
    assert d.pending["slow"].reason == QueueReason.BACKOFF_REQUEUE
    assert d.pending["slow"].message == (
        f"requeued after its gang was not ready in time; tried again in {wait:g}s"
        f" (attempt {count_before + 2})"
    )


def test_past_the_backoff_limit_the_job_is_deactivated() -> None:
    q = cq("a", 8, backoff_limit=5)
    d = run([q], [leaving("slow", 4, reason=QueueReason.PODS_READY_TIMEOUT, requeue_count=4)])
    assert d.release["slow"].deactivated is False
    d = run([q], [leaving("slow", 4, reason=QueueReason.PODS_READY_TIMEOUT, requeue_count=5)])
    r = d.release["slow"]
    assert (r.deactivated, r.requeue_count, r.requeue_at) == (True, 6, None)
    assert d.pending["slow"].reason == QueueReason.DEACTIVATED
    assert d.pending["slow"].message == (
        "deactivated: its gang was not ready in time 6 times (limit 5);"
        " suspend and resume the job to try again"
    )
    assert d.usage["a"].pending == 0


# ---------------------------------------------------------------- pending reasons


def test_a_deactivated_job_says_so_before_anything_else() -> None:
    d = run([cq("a", 8, stop=StopPolicy.HOLD)], [job("j", 99, "nowhere", active=False)])
    assert d.pending["j"].reason == QueueReason.DEACTIVATED
    assert d.pending["j"].message == "the job was deactivated"
    assert d.pending["j"].position is None


def test_a_job_whose_queue_cannot_be_resolved_is_misconfigured() -> None:
    jobs = [
        job("no-lq", 1, None, misconfigured="LocalQueue team/x does not exist"),
        job("no-cq", 1, "ghost"),
    ]
    d = run([cq("a", 8)], jobs)
    assert reasons(d) == {"no-lq": "Misconfigured", "no-cq": "Misconfigured"}
    assert d.pending["no-lq"].message == "LocalQueue team/x does not exist"
    assert d.pending["no-cq"].message == "ClusterQueue ghost does not exist"


def test_a_released_job_whose_queue_is_gone_still_gets_a_reason() -> None:
    victim = leaving("v", 4, reason=QueueReason.PREEMPTED)
    moved = JobInfo(**{**victim.__dict__, "queue": "ghost"})
    d = run([cq("a", 8)], [moved])
    assert "v" in d.release
    assert d.pending["v"].reason == QueueReason.MISCONFIGURED


def test_a_held_queue_admits_nothing_and_lets_admitted_jobs_run() -> None:
    d = run([cq("a", 8, stop=StopPolicy.HOLD)], [running("r", 2), job("j", 1)])
    assert d.admit == {}
    assert d.evict == {}
    assert d.pending["j"].reason == QueueReason.STOPPED
    assert d.pending["j"].message == "ClusterQueue a is held (stopPolicy)"
    assert d.pending["j"].position is None

    d = run([cq("a", 8)], [job("j", 1, local_stopped=True), job("k", 1)])
    assert set(d.admit) == {"k"}
    assert d.pending["j"].reason == QueueReason.STOPPED
    assert d.pending["j"].message == "its LocalQueue is held (stopPolicy)"


def test_hold_and_drain_evicts_what_is_admitted() -> None:
    jobs = [
        running("r", 2),
        leaving("already", 2, reason=QueueReason.PREEMPTED, workers_gone=False),
        job("j", 1),
    ]
    d = run([cq("a", 8, stop=StopPolicy.HOLD_AND_DRAIN)], jobs)
    assert set(d.evict) == {"r"}
    assert d.evict["r"].reason == QueueReason.CLUSTER_QUEUE_STOPPED
    assert d.evict["r"].message == "ClusterQueue a is held and drained"
    assert d.pending["j"].reason == QueueReason.STOPPED


def test_a_job_for_a_resource_its_queue_has_no_quota_for_exceeds_max_quota() -> None:
    d = run([cq("a", None, extra={CPU: Quota(64)})], [job("gpu-job", 2, demand={CPU: 4.0})])
    assert d.pending["gpu-job"].reason == QueueReason.EXCEEDS_MAX_QUOTA
    assert d.pending["gpu-job"].message == (
        "needs 2 GPUs; ClusterQueue a has no quota for nvidia.com/gpu"
    )
    assert d.pending["gpu-job"].position is None
    d = run([cq("a", 8)], [job("nine", 9)])
    assert d.pending["nine"].message == "needs 9 GPUs, more than a can ever hold (8)"


def test_a_job_in_backoff_waits_it_out_then_is_tried() -> None:
    backing_off = job("j", 99, requeue_at=NOW + 30, requeue_count=2)
    d = run([cq("a", 8)], [backing_off])
    assert d.pending["j"].reason == QueueReason.BACKOFF_REQUEUE  # before ExceedsMaxQuota
    assert d.pending["j"].message == (
        "requeued after its gang was not ready in time; tried again in 30s (attempt 3)"
    )
    d = run([cq("a", 8)], [job("j", 4, requeue_at=NOW - 1, requeue_count=2)])
    assert set(d.admit) == {"j"}


def test_reasons_follow_the_documented_precedence() -> None:
    assert PENDING_PRECEDENCE[:5] == (
        QueueReason.DEACTIVATED,
        QueueReason.MISCONFIGURED,
        QueueReason.STOPPED,
        QueueReason.BACKOFF_REQUEUE,
        QueueReason.EXCEEDS_MAX_QUOTA,
    )
    held = cq("a", 8, stop=StopPolicy.HOLD)
    jobs = [
        job("inactive-misconfigured", 1, "ghost", active=False),
        job("misconfigured-held", 1, "ghost", misconfigured="bad"),
        job("held-backoff", 1, requeue_at=NOW + 5),
        job("backoff-too-big", 99, "b", requeue_at=NOW + 5),
    ]
    d = run([held, cq("b", 8)], jobs)
    assert reasons(d) == {
        "inactive-misconfigured": "Deactivated",
        "misconfigured-held": "Misconfigured",
        "held-backoff": "Suspended",
        "backoff-too-big": "BackoffRequeue",
    }


def test_positions_count_from_one_in_each_queue() -> None:
    jobs = [running("ra", 8, "a"), running("rb", 8, "b")]
    jobs += [job(f"a{i}", 1, "a", t=float(10 - i)) for i in range(3)]
    jobs += [job(f"b{i}", 1, "b", priority=i) for i in range(3)]
    jobs += [job("held-back", 1, "a", requeue_at=NOW + 60)]
    d = run([cq("a", 8), cq("b", 8)], jobs)
    assert {k: p.position for k, p in d.pending.items()} == {
        "a2": 1,
        "a1": 2,
        "a0": 3,
        "b2": 1,
        "b1": 2,
        "b0": 3,
        "held-back": None,
    }


def test_usage_counts_reserved_borrowed_admitted_and_pending() -> None:
    queues = [cq("a", 4, cohort="c"), cq("b", 8, cohort="c")]
    jobs = [
        running("ra", 3, "a"),
        job("borrow", 3, "a"),
        job("too-big", 20, "a"),
        job("own", 4, "b", t=1),
        job("waits", 5, "b", t=2),  # must borrow, and is younger than a's borrower
        job("gone", 1, "ghost"),
    ]
    d = run(queues, jobs)
    assert set(d.admit) == {"own", "borrow"}
    assert d.admit["borrow"].borrowing is True
    assert d.usage["a"].reserved == {GPU: 6}
    assert d.usage["a"].borrowed == {GPU: 2}
    assert (d.usage["a"].admitted, d.usage["a"].pending) == (2, 1)
    assert d.usage["b"].reserved == {GPU: 4}
    assert d.usage["b"].borrowed == {GPU: 0}
    assert (d.usage["b"].admitted, d.usage["b"].pending) == (1, 1)
    assert d.pending["waits"].message == (
        "needs 5 GPUs, 2 available to b now (nominal 8, 4 in use, 2 lent out; cohort c lends 0)"
    )


# ---------------------------------------------------------------- property: never over quota


def _random_queues(rng: random.Random) -> list[QueueInfo]:
    queues = []
    for i in range(rng.randint(1, 4)):
        cohort = rng.choice([None, "c1", "c1", "c2"])
        queues.append(
            QueueInfo(
                name=f"q{i}",
                quotas={
                    GPU: Quota(
                        float(rng.randint(0, 8)),
                        rng.choice([None, None, float(rng.randint(0, 4))]),
                        rng.choice([None, None, float(rng.randint(0, 8))]),
                    ),
                    CPU: Quota(float(rng.randint(4, 32)), rng.choice([None, 8.0])),
                },
                cohort=cohort,
                strict_fifo=rng.random() < 0.3,
                within=rng.choice(list(WithinClusterQueue)),
                reclaim=rng.choice(list(ReclaimWithinCohort)),
                backoff_base=rng.choice([0.0, 60.0]),
                backoff_limit=rng.choice([None, 1, 3]),
            )
        )
    return queues


def _check_quota(queues: list[QueueInfo], jobs: dict[str, JobInfo]) -> None:
    used: dict[str, dict[str, float]] = {q.name: {} for q in queues}
    for j in jobs.values():
        if j.held is not None:
            for r, v in j.held.usage.items():
                used[j.held.queue][r] = used[j.held.queue].get(r, 0.0) + v
    cohorts: dict[str | None, list[QueueInfo]] = {}
    for q in queues:
        cohorts.setdefault(q.cohort, []).append(q)
        for r, quota in q.quotas.items():
            u = used[q.name].get(r, 0.0)
            limit = quota.nominal
            if q.cohort:
                limit += math_inf if quota.borrowing_limit is None else quota.borrowing_limit
            assert u <= limit + 1e-6, (q.name, r, u, limit)
    for cohort, members in cohorts.items():
        if cohort is None:
            continue
        for r in (GPU, CPU):
            total = sum(used[m.name].get(r, 0.0) for m in members)
            assert total <= sum(m.quotas[r].nominal for m in members) + 1e-6
            # What members take beyond their unlent part never exceeds what the others lend.
            over = sum(max(0.0, used[m.name].get(r, 0.0) - m.quotas[r].guaranteed) for m in members)
            assert over <= sum(m.quotas[r].lendable for m in members) + 1e-6


math_inf = float("inf")


def _check_decisions(d: Decisions, jobs: dict[str, JobInfo]) -> None:
    assert not set(d.admit) & set(d.pending), "admitted and pending"
    assert not set(d.admit) & set(d.evict), "admitted and evicted"
    for k in d.evict:
        held = jobs[k].held
        assert held is not None
        assert not jobs[k].evicting
    for k in d.release:
        assert jobs[k].evicting
        assert jobs[k].workers_gone
    for k, j in jobs.items():
        waiting = j.held is None or k in d.release
        assert waiting == (k in d.admit or k in d.pending), k
    for e in d.evict.values():
        if e.preemptor is not None:
            assert d.pending[e.preemptor].reason == QueueReason.WAITING_FOR_PREEMPTED
    by_queue: dict[str, list[int]] = {}
    for k, p in d.pending.items():
        if p.position is not None:
            by_queue.setdefault(str(jobs[k].queue), []).append(p.position)
    for positions in by_queue.values():
        assert sorted(positions) == list(range(1, len(positions) + 1))


def _apply(d: Decisions, jobs: dict[str, JobInfo], now: float, rng: random.Random) -> None:
    for k, r in d.release.items():
        j = jobs[k]
        jobs[k] = JobInfo(
            **{
                **j.__dict__,
                "held": None,
                "evicting": None,
                "evicted_for": None,
                "requeue_count": r.requeue_count,
                "requeue_at": r.requeue_at,
                "active": not r.deactivated,
                "timestamp": r.requeue_at if r.requeue_at is not None else j.timestamp,
            }
        )
    for k, a in d.admit.items():
        jobs[k] = JobInfo(
            **{
                **jobs[k].__dict__,
                "held": Held(a.queue, a.usage, now, a.borrowing),
                "workers_gone": False,
                "all_ready": rng.random() < 0.8,
            }
        )
    for k, e in d.evict.items():
        jobs[k] = JobInfo(**{**jobs[k].__dict__, "evicting": e.reason, "evicted_for": e.preemptor})
    for k, j in list(jobs.items()):
        if j.evicting and rng.random() < 0.5:
            jobs[k] = JobInfo(**{**j.__dict__, "workers_gone": True})
        elif j.held is not None and not j.evicting and rng.random() < 0.1:
            del jobs[k]  # finished
        elif j.held is not None and not j.all_ready and rng.random() < 0.5:
            jobs[k] = JobInfo(**{**j.__dict__, "all_ready": True})


@pytest.mark.parametrize("seed", range(4))
def test_random_rounds_never_admit_beyond_quota(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(75):
        queues = _random_queues(rng)
        names = [q.name for q in queues]
        jobs: dict[str, JobInfo] = {}
        now = 0.0
        for step in range(8):
            for n in range(rng.randint(0, 5)):
                key = f"j{step}-{n}"
                jobs[key] = JobInfo(
                    key=key,
                    queue=rng.choice([*names, *names, "ghost"]),
                    demand={GPU: float(rng.randint(0, 6)), CPU: float(rng.randint(1, 8))},
                    priority=rng.randint(0, 3),
                    timestamp=now,
                    min_runtime=rng.choice([0.0, 0.0, 400.0]),
                    last_checkpoint_at=rng.choice([None, now]),
                )
            d = schedule(queues, list(jobs.values()), now)
            _check_decisions(d, jobs)
            _apply(d, jobs, now, rng)
            _check_quota(queues, jobs)
            now += rng.choice([30.0, 200.0, 700.0])


# ---------------------------------------------------------------- capacity (healthy GPUs)


def test_quota_beyond_the_healthy_gpus_admits_only_what_there_is() -> None:
    # Two queues promise 16 GPUs; a node went EVICT and the cluster has 12 healthy ones.
    queues = [cq("a", 8), cq("b", 8)]
    jobs = [running("r", 8, "a"), job("j", 8, "b")]
    d = schedule(queues, jobs, NOW, capacity={GPU: 12})
    assert d.admit == {}
    p = d.pending["j"]
    assert p.reason == QueueReason.WAITING_FOR_QUOTA
    assert p.message == (
        "needs 8 GPUs, 4 available to b now (nominal 8, 0 in use;"
        " the cluster's healthy nodes have 12)"
    )
    # The node passes its checks again: the same jobs fit.
    d = schedule(queues, jobs, NOW, capacity={GPU: 16})
    assert set(d.admit) == {"j"}


def test_a_job_within_the_healthy_capacity_is_admitted_as_before() -> None:
    d = schedule([cq("a", 8)], [running("r", 3), job("j", 5)], NOW, capacity={GPU: 64})
    assert set(d.admit) == {"j"}
    assert d.usage["a"].reserved[GPU] == 8
