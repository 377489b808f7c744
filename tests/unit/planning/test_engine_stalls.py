"""The engine's stall and straggler rules: what a person watching a hung or uneven job sees."""

from __future__ import annotations

from typing import Any

from planning_fakes import at, failed, running, tj

from carina.platform.api.reasons import ConditionType, Reason
from carina.platform.api.types import (
    Phase,
    Progress,
    RestartCounts,
    Straggler,
    TrainingJob,
    TrainingJobStatus,
)
from carina.platform.planning.actions import FailJob, Nothing, RestartGang, Wait
from carina.platform.planning.engine import Plan, plan
from carina.platform.planning.status import get_condition, set_condition

WORKERS = [running(0, node="n0"), running(1, node="n1")]


def job(**policy: Any) -> TrainingJob:
    return tj(replicas=2, failurePolicy={"backoffSeconds": 10, **policy})


def stepping(
    step: int = 500, when: float = 1000, median: float | None = 10, total: int = 10_000
) -> Progress:
    return Progress(
        step=step,
        total_steps=total,
        step_seconds=median,
        updated_at=at(when),
        stepped_at=at(when),
    )


def running_job(
    j: TrainingJob | None = None, progress: Progress | None = None, since: float = 0, **status: Any
) -> TrainingJob:
    """A job whose two workers have run since `at(since)`, last stepping as `progress` says."""
    s = TrainingJobStatus(phase=Phase.RUNNING, progress=progress or stepping(), **status)
    s.workers.total = s.workers.ready = 2
    for type_ in (ConditionType.RUNNING, ConditionType.WORKERS_READY):
        set_condition(s, type_, True, Reason.WORKERS_RUNNING, "2/2 workers running", at(since))
    return (j or job()).model_copy(update={"status": s})


def then(decided: Plan, j: TrainingJob) -> TrainingJob:
    return j.model_copy(update={"status": decided.status})


def events(decided: Plan) -> list[tuple[str, str]]:
    return [(e.type, str(e.reason)) for e in decided.events]


# ---------------------------------------------------------------- stalls


def test_a_step_that_stops_advancing_stalls_the_job_and_restarts_it_as_an_application_restart():
    decided = plan(running_job(), WORKERS, at(1101))
    stalled = get_condition(decided.status, ConditionType.STALLED)
    assert stalled is not None
    assert (stalled.status, stalled.reason) == ("True", Reason.STALLED)
    assert "no step for 101s after step 500" in stalled.message
    assert isinstance(decided.action, RestartGang)
    assert (decided.action.reason, decided.action.restart) == (Reason.STALLED, 1)
    assert decided.status.phase == Phase.RESTARTING
    assert decided.status.restarts_by_reason == RestartCounts(application=1)
    assert ("Warning", "Stalled") in events(decided)
    said = next(e for e in decided.events if e.reason == Reason.STALLED and "after" in e.message)
    assert said.message == stalled.message  # the evidence, in the event too


def test_until_then_the_job_waits_for_the_moment_it_would_be_stalled():
    decided = plan(running_job(), WORKERS, at(1050))
    assert decided.action == Wait(at(1100))
    assert get_condition(decided.status, ConditionType.STALLED) is None
    assert decided.events == ()


def test_a_scrape_that_repeats_the_step_does_not_reset_the_clock():
    same = stepping(step=500, when=1090)  # scraped again at 1090: still step 500
    decided = plan(running_job(), WORKERS, at(1090), progress=same)
    assert decided.status.progress is not None
    assert decided.status.progress.stepped_at == at(1000)
    assert decided.action == Wait(at(1100))


def test_a_new_step_resets_the_clock():
    decided = plan(running_job(), WORKERS, at(1090), progress=stepping(step=501, when=1090))
    assert decided.action == Wait(at(1190))


def test_a_hang_that_keeps_coming_back_uses_up_max_restarts_and_fails_the_job():
    used = RestartCounts(application=2)
    j = running_job(job(maxRestarts=2), restarts=2, restarts_by_reason=used)
    decided = plan(j, [running(0, restart=2), running(1, restart=2)], at(1101))
    assert isinstance(decided.action, FailJob)
    assert decided.action.reason == Reason.MAX_RESTARTS_EXCEEDED
    assert decided.status.phase == Phase.FAILED
    assert ("Warning", "MaxRestartsExceeded") in events(decided)


def test_a_stall_restart_backs_off_like_any_application_restart():
    used = RestartCounts(application=1)
    j = running_job(restarts=1, restarts_by_reason=used)
    decided = plan(j, [running(0, restart=1), running(1, restart=1)], at(1101))
    assert isinstance(decided.action, RestartGang)
    assert decided.action.not_before == at(1101 + 20)  # backoffSeconds 10, doubled


def test_with_restart_off_the_job_is_only_said_to_be_stalled_once():
    j = running_job(job(stall={"restart": False}))
    first = plan(j, WORKERS, at(1101))
    assert first.status.phase == Phase.RUNNING
    assert isinstance(first.action, Nothing | Wait)
    assert events(first) == [("Warning", "Stalled")]
    again = plan(then(first, j), WORKERS, at(1500))
    assert again.events == ()
    assert get_condition(again.status, ConditionType.STALLED) == get_condition(
        first.status, ConditionType.STALLED
    )


def test_stalled_turns_false_once_the_restarted_gang_steps_again():
    stalled = plan(running_job(), WORKERS, at(1101))
    # The new gang runs from 1200; its rank 0 resumed from the checkpoint and steps at 1300.
    j = running_job(since=1200, restarts=1)
    assert stalled.status.conditions
    j.status.conditions.extend(  # type: ignore[union-attr]
        c for c in stalled.status.conditions if c.type == ConditionType.STALLED
    )
    workers = [running(0, restart=1), running(1, restart=1)]
    decided = plan(j, workers, at(1300), progress=stepping(step=401, when=1300))
    cond = get_condition(decided.status, ConditionType.STALLED)
    assert cond is not None
    assert (cond.status, cond.reason) == ("False", Reason.STEPPING)
    assert "step 401" in cond.message
    assert decided.events == ()


def test_a_new_gang_is_given_its_startup_time_before_its_first_step():
    # Progress still from the gang before the restart (step 500 at 1000); this one runs from 1200.
    j = running_job(since=1200, restarts=1)
    decided = plan(j, [running(0, restart=1), running(1, restart=1)], at(2000))
    assert decided.action == Wait(at(1200 + 1800))


def test_a_substrate_that_reads_no_progress_judges_no_stall():
    decided = plan(running_job(), WORKERS, at(50_000), watching=False)
    assert get_condition(decided.status, ConditionType.STALLED) is None
    assert decided.action == Nothing()


def test_a_gang_past_its_last_step_is_finishing_not_stalled():
    done = stepping(step=10_000, when=1000, total=10_000)  # saving its final checkpoint
    decided = plan(running_job(progress=done), WORKERS, at(5000))
    assert get_condition(decided.status, ConditionType.STALLED) is None
    assert not isinstance(decided.action, RestartGang)


# ---------------------------------------------------------------- stragglers


def gpu_job() -> TrainingJob:
    """Two workers of 8 GPUs: ranks 0-7 on worker 0, 8-15 on worker 1."""
    return tj(replicas=2, cluster="vela", resources={"gpus": 8, "cpu": "1", "memory": "1Gi"})


def times(slow: dict[int, float], world: int = 16) -> dict[int, float]:
    return {r: slow.get(r, 0.20 + 0.001 * (r % 3)) for r in range(world)}


def test_a_slow_rank_is_named_with_its_worker_and_node_and_announced_once():
    j = running_job(gpu_job())
    decided = plan(j, WORKERS, at(1050), rank_seconds=times({11: 0.45}))
    assert decided.status.stragglers == [
        Straggler(rank=11, worker=1, node="n1", step_seconds=0.45, median_seconds=0.201)
    ]
    [event] = decided.events
    assert (event.type, event.reason) == ("Warning", "Straggler")
    assert "rank 11 (worker 1 on node n1)" in event.message
    assert "2.2x the median" in event.message
    again = plan(then(decided, j), WORKERS, at(1060), rank_seconds=times({11: 0.44}))
    assert again.events == ()
    assert again.status.stragglers is not None
    assert again.status.stragglers[0].step_seconds == 0.44


def test_a_rank_that_caught_up_is_no_longer_named():
    j = running_job(gpu_job())
    named = plan(j, WORKERS, at(1050), rank_seconds=times({11: 0.45}))
    caught_up = plan(then(named, j), WORKERS, at(1060), rank_seconds=times({}))
    assert caught_up.status.stragglers is None
    assert caught_up.events == ()


def test_without_new_times_the_stragglers_stay_as_they_were():
    j = running_job(gpu_job())
    named = plan(j, WORKERS, at(1050), rank_seconds=times({3: 0.5}))
    quiet = plan(then(named, j), WORKERS, at(1060))
    assert quiet.status.stragglers == named.status.stragglers


def test_a_restarting_gang_has_no_stragglers():
    j = running_job(gpu_job())
    named = plan(j, WORKERS, at(1050), rank_seconds=times({3: 0.5}))
    crashed = [WORKERS[0], failed(1, node="n1")]
    restarted = plan(then(named, j), crashed, at(1060), rank_seconds=times({3: 0.5}))
    assert isinstance(restarted.action, RestartGang)
    assert restarted.status.stragglers is None


def test_a_worker_without_a_node_names_its_straggler_by_rank_and_worker():
    j = running_job(tj(replicas=3, failurePolicy={"backoffSeconds": 10}))
    local = [running(0), running(1), running(2)]  # the embedded substrate's have no node
    decided = plan(j, local, at(1050), rank_seconds={0: 0.1, 1: 0.4, 2: 0.1})
    assert decided.status.stragglers == [
        Straggler(rank=1, worker=1, node=None, step_seconds=0.4, median_seconds=0.1)
    ]
    assert "rank 1 (worker 1)" in decided.events[0].message


def test_a_job_that_stepped_after_a_stall_and_stalled_again_is_told_anew():
    j = running_job(job(stall={"restart": False}))
    first = plan(j, WORKERS, at(1101))  # stalled after step 500
    # Step 501 came at 1200, then nothing; the next look is at 1400.
    stepped = plan(then(first, j), WORKERS, at(1400), progress=stepping(step=501, when=1200))
    cleared = get_condition(stepped.status, ConditionType.STALLED)
    assert cleared is not None
    assert cleared.status == "False"
    assert stepped.action == Wait(at(1400))  # one transition per look: look again at once
    again = plan(then(stepped, j), WORKERS, at(1400))
    cond = get_condition(again.status, ConditionType.STALLED)
    assert cond is not None
    assert cond.status == "True"
    assert "after step 501" in cond.message
    assert events(again) == [("Warning", "Stalled")]
