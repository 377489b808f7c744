"""Status derivation: phase, conditions and counts from spec + observed workers."""

from __future__ import annotations

import json

import pytest
from planning_fakes import at, failed, pending, running, succeeded, tj

from carina.platform.api.reasons import ConditionType, Reason
from carina.platform.api.types import CheckpointStatus, Phase, TrainingJobStatus
from carina.platform.planning.actions import CreateWorkers, FailJob, RestartGang, SucceedJob
from carina.platform.planning.observed import ObservedWorker
from carina.platform.planning.status import (
    apply_action,
    derive_status,
    get_condition,
    set_condition,
)


def status(phase: Phase = Phase.PENDING, **fields) -> TrainingJobStatus:
    return TrainingJobStatus(phase=phase, **fields)


PHASE_CASES = [
    # (name, previous phase, workers, suspend, expected phase)
    ("new job without workers", None, [], False, Phase.PENDING),
    ("some workers pending", Phase.STARTING, [pending(0), running(1)], False, Phase.STARTING),
    ("all workers ready", Phase.STARTING, [running(0), running(1)], False, Phase.RUNNING),
    ("restarting until the new gang runs", Phase.RESTARTING, [pending(0)], False, Phase.RESTARTING),
    ("restarted gang running", Phase.RESTARTING, [running(0), running(1)], False, Phase.RUNNING),
    (
        "suspend requested while running",
        Phase.RUNNING,
        [running(0), running(1)],
        True,
        Phase.SUSPENDED,
    ),
    ("resumed job starts again", Phase.SUSPENDED, [], False, Phase.STARTING),
    ("finished jobs stay finished", Phase.FAILED, [running(0)], False, Phase.FAILED),
    (
        "running gang with a worker not ready stays Running",
        Phase.RUNNING,
        [running(0), ObservedWorker(1, "Running", False, 0)],
        False,
        Phase.RUNNING,
    ),
]


@pytest.mark.parametrize(
    ("previous", "workers", "suspend", "expected"),
    [c[1:] for c in PHASE_CASES],
    ids=[c[0] for c in PHASE_CASES],
)
def test_phase(previous, workers, suspend, expected):
    job = tj(suspend=suspend)
    prev = status(previous) if previous else None
    assert derive_status(job, workers, prev, at(10)).phase == expected


def test_counts_only_the_current_generation():
    prev = status(Phase.RESTARTING, restarts=1)
    workers = [failed(0, restart=0), running(0, restart=1), succeeded(1, restart=1)]
    st = derive_status(tj(), workers, prev, at(1))
    assert st.workers.model_dump() == {"total": 2, "ready": 1, "succeeded": 1, "failed": 0}


def test_workload_kind_generation_and_restarts_are_carried():
    prev = status(Phase.RUNNING, restarts=2)
    prev.restarts_by_reason.infrastructure = 2
    st = derive_status(tj(), [running(0, 2), running(1, 2)], prev, at(1))
    assert st.workload == "pretrain"
    assert st.observed_generation == 1
    assert st.restarts == 2
    assert st.restarts_by_reason.infrastructure == 2


def test_running_sets_conditions_and_start_time():
    st = derive_status(tj(), [running(0), running(1)], status(Phase.STARTING), at(5))
    assert st.start_time == at(5)
    ready = get_condition(st, ConditionType.WORKERS_READY)
    assert (ready.status, ready.reason) == ("True", Reason.WORKERS_RUNNING)
    assert get_condition(st, ConditionType.RUNNING).status == "True"


def test_unschedulable_workers_say_so():
    workers = [pending(0, reason="Unschedulable"), pending(1)]
    st = derive_status(tj(), workers, status(Phase.STARTING), at(1))
    cond = get_condition(st, ConditionType.WORKERS_READY)
    assert (cond.status, cond.reason) == ("False", Reason.UNSCHEDULABLE)
    assert "[0]" in cond.message


def test_last_checkpoint_comes_from_the_termination_message():
    msg = json.dumps({"checkpoint": {"step": 40, "uri": "s3://b/llm/step-40"}})
    older = json.dumps({"checkpoint": {"step": 20, "uri": "s3://b/llm/step-20"}})
    workers = [
        failed(0, 75, termination_message=msg, finished_at=at(3)),
        failed(1, 75, termination_message=older),
    ]
    st = derive_status(tj(), workers, status(Phase.RUNNING), at(4))
    assert (st.last_checkpoint.step, st.last_checkpoint.uri) == (40, "s3://b/llm/step-40")
    assert st.last_checkpoint.time == at(3)


def test_a_final_word_naming_a_result_of_the_last_saved_step_becomes_the_last_checkpoint():
    # quantize: the gauge reported its final QAT checkpoint, the final word its packed model.
    scraped = CheckpointStatus(step=60, uri="s3://b/q/step-00000060", time=at(2))
    said = json.dumps({"checkpoint": {"step": 60, "uri": "s3://b/q/quantized"}})
    workers = [succeeded(0, termination_message=said, finished_at=at(3))]
    st = derive_status(tj(), workers, status(Phase.RUNNING, last_checkpoint=scraped), at(4))
    assert (st.last_checkpoint.step, st.last_checkpoint.uri) == (60, "s3://b/q/quantized")
    again = derive_status(tj(), workers, st, at(5))
    assert again.last_checkpoint == st.last_checkpoint


def test_garbage_termination_message_is_ignored():
    st = derive_status(tj(), [failed(0, 1, termination_message="Traceback ...")], None, at(1))
    assert st.last_checkpoint is None


def test_suspension_resets_start_time_and_marks_condition():
    prev = status(Phase.RUNNING, start_time=at(0))
    st = derive_status(tj(suspend=True), [running(0)], prev, at(9))
    assert st.start_time is None
    cond = get_condition(st, ConditionType.SUSPENDED)
    assert (cond.status, cond.reason) == ("True", Reason.SUSPENDED)
    resumed = derive_status(tj(), [], st, at(20))
    cond = get_condition(resumed, ConditionType.SUSPENDED)
    assert (cond.status, cond.reason) == ("False", Reason.RESUMED)


def test_set_condition_keeps_transition_time_when_only_the_message_changes():
    st = status()
    set_condition(st, ConditionType.RUNNING, True, Reason.WORKERS_RUNNING, "a", at(1))
    set_condition(st, ConditionType.RUNNING, True, Reason.WORKERS_RUNNING, "b", at(2))
    assert st.conditions[0].last_transition_time == at(1)
    assert st.conditions[0].message == "b"
    set_condition(st, ConditionType.RUNNING, False, Reason.WORKER_FAILED, "c", at(3))
    assert st.conditions[0].last_transition_time == at(3)
    assert len(st.conditions) == 1


def test_derive_is_stable_once_nothing_changes():
    workers = [running(0), running(1)]
    first = derive_status(tj(), workers, status(Phase.STARTING), at(1))
    again = derive_status(tj(), workers, first, at(2))
    assert again == first


# ---------------------------------------------------------------- apply_action


def test_restart_is_recorded_once_by_reason():
    prev = status(Phase.RUNNING)
    action = RestartGang(Reason.NODE_FAILURE, restart=1, not_before=None, message="node lost")
    st = apply_action(tj(), prev, action, at(1))
    again = apply_action(tj(), st, action, at(2))
    assert again.restarts == 1
    assert again.restarts_by_reason.infrastructure == 1
    assert again.phase == Phase.RESTARTING
    cond = get_condition(again, ConditionType.RESTARTING)
    assert (cond.status, cond.reason) == ("True", Reason.NODE_FAILURE)


@pytest.mark.parametrize(
    ("reason", "field"),
    [
        (Reason.WORKER_FAILED, "application"),
        (Reason.EVICTED, "infrastructure"),
        (Reason.NODE_FAILURE, "infrastructure"),
        (Reason.PREEMPTED, "preemption"),
    ],
)
def test_restarts_count_by_whose_fault(reason, field):
    st = apply_action(tj(), status(Phase.RUNNING), RestartGang(reason, 1), at(1))
    assert getattr(st.restarts_by_reason, field) == 1
    assert st.restarts_by_reason.model_dump() == {
        "application": 0,
        "infrastructure": 0,
        "preemption": 0,
    } | {field: 1}


def test_fail_and_succeed_set_terminal_phase_and_completion():
    failed_st = apply_action(
        tj(), status(Phase.RUNNING), FailJob(Reason.PERMANENT_EXIT_CODE, "x"), at(7)
    )
    assert failed_st.phase == Phase.FAILED
    assert failed_st.completion_time == at(7)
    cond = get_condition(failed_st, ConditionType.FAILED)
    assert (cond.status, cond.reason, cond.message) == ("True", "PermanentExitCode", "x")
    done = apply_action(tj(), status(Phase.RUNNING), SucceedJob(), at(8))
    assert done.phase == Phase.SUCCEEDED
    assert done.completion_time == at(8)


def test_create_workers_starts_a_pending_job():
    st = apply_action(tj(), status(), CreateWorkers((0, 1), 0), at(2))
    assert st.phase == Phase.STARTING
    assert st.start_time == at(2)
