"""The failure policy, one rule per row: what happens next for a job in a given state."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from planning_fakes import at, failed, pending, running, succeeded, tj

from carina.platform.api.reasons import Reason
from carina.platform.api.types import Phase, RestartCounts, TrainingJobStatus
from carina.platform.planning.failure_policy import (
    STALE_RECHECK,
    CreateWorkers,
    DeleteJob,
    FailJob,
    Nothing,
    RestartGang,
    SucceedJob,
    SuspendWorkers,
    Wait,
    classify_failure,
    kept,
    next_action,
    restart_backoff,
    superseded,
)
from carina.platform.planning.observed import ObservedWorker
from carina.platform.planning.status import apply_action, derive_status

NOW = at(100)


def st(phase=Phase.RUNNING, restarts=0, application=0, **fields) -> TrainingJobStatus:
    return TrainingJobStatus(
        phase=phase,
        restarts=restarts,
        restarts_by_reason=RestartCounts(application=application),
        **fields,
    )


CASES = [
    # (name, job, status, workers, expected action)
    ("new job creates every worker", tj(3), st(Phase.PENDING), [], CreateWorkers((0, 1, 2), 0)),
    (
        "creation cut short creates only the missing",
        tj(3),
        st(Phase.STARTING),
        [running(0), pending(2)],
        CreateWorkers((1,), 0),
    ),
    ("running gang needs nothing", tj(2), st(), [running(0), running(1)], Nothing()),
    (
        "retryable exit restarts the gang with backoff",
        tj(2, failurePolicy={"backoffSeconds": 5}),
        st(),
        [running(0), failed(1, 1)],
        RestartGang(
            Reason.WORKER_FAILED, 1, NOW + timedelta(seconds=5), "worker 1 exited with code 1"
        ),
    ),
    (
        "transient exit 76 is retryable",
        tj(2, failurePolicy={"backoffSeconds": 0}),
        st(),
        [failed(0, 76), running(1)],
        RestartGang(Reason.WORKER_FAILED, 1, None, "worker 0 exited with code 76"),
    ),
    (
        "permanent exit fails at once",
        tj(2),
        st(),
        [running(0), failed(1, 65)],
        FailJob(
            Reason.PERMANENT_EXIT_CODE,
            "worker 1 exited with code 65 (BAD_DATA), which is permanent",
        ),
    ),
    (
        "user-listed permanent code",
        tj(1, failurePolicy={"permanentExitCodes": [3]}),
        st(),
        [failed(0, 3)],
        FailJob(Reason.PERMANENT_EXIT_CODE, "worker 0 exited with code 3, which is permanent"),
    ),
    (
        "max restarts used up",
        tj(2, failurePolicy={"maxRestarts": 2}),
        st(restarts=2, application=2),
        [failed(0, 1, restart=2), running(1, restart=2)],
        FailJob(
            Reason.MAX_RESTARTS_EXCEEDED,
            "worker 0 exited with code 1; 2 application restarts used, maxRestarts is 2",
        ),
    ),
    (
        "zero max restarts fails the first failure",
        tj(1, failurePolicy={"maxRestarts": 0}),
        st(),
        [failed(0, 1)],
        FailJob(
            Reason.MAX_RESTARTS_EXCEEDED,
            "worker 0 exited with code 1; 0 application restarts used, maxRestarts is 0",
        ),
    ),
    (
        "exit 75 after a checkpoint is a preemption",
        tj(1),
        st(),
        [failed(0, 75)],
        RestartGang(Reason.PREEMPTED, 1, None, "worker 0 exited with code 75"),
    ),
    (
        "node loss is infrastructure, restarts at once",
        tj(2),
        st(),
        [
            running(0),
            ObservedWorker(1, "Running", False, 0, reason="NodeLost", node="n1", deleting=True),
        ],
        RestartGang(Reason.NODE_FAILURE, 1, None, "worker 1 on node n1: NodeLost"),
    ),
    (
        "eviction is infrastructure",
        tj(1),
        st(),
        [ObservedWorker(0, "Failed", False, 0, reason="Evicted", node="n2")],
        RestartGang(Reason.EVICTED, 1, None, "worker 0 on node n2: Evicted"),
    ),
    (
        "infrastructure restarts do not consume maxRestarts",
        tj(1, failurePolicy={"maxRestarts": 0}),
        st(),
        [ObservedWorker(0, "Unknown", False, 0, node="n3")],
        RestartGang(Reason.NODE_FAILURE, 1, None, "worker 0 on node n3: NodeFailure"),
    ),
    (
        "node failure names the restart over the ranks it took down",
        tj(2),
        st(),
        [failed(0, 1), ObservedWorker(1, "Failed", False, 0, reason="NodeLost")],
        RestartGang(Reason.NODE_FAILURE, 1, None, "worker 1: NodeLost"),
    ),
    (
        "a worker vanished from a running gang",
        tj(2),
        st(),
        [running(0)],
        RestartGang(Reason.EVICTED, 1, None, "worker 1 disappeared"),
    ),
    (
        "older generation is stopped first",
        tj(2),
        st(Phase.RESTARTING, restarts=1, restart_not_before=at(50)),
        [failed(0, 1, restart=0), running(1, restart=0)],
        RestartGang(Reason.WORKER_FAILED, 1, at(50)),
    ),
    (
        "waits while the old generation terminates",
        tj(2),
        st(Phase.RESTARTING, restarts=1),
        [ObservedWorker(0, "Running", True, 0, deleting=True)],
        Wait(NOW + STALE_RECHECK),
    ),
    (
        "backoff not over yet",
        tj(2),
        st(Phase.RESTARTING, restarts=1, restart_not_before=at(130)),
        [],
        Wait(at(130)),
    ),
    (
        "backoff over creates the new generation",
        tj(2),
        st(Phase.RESTARTING, restarts=1, restart_not_before=at(90)),
        [],
        CreateWorkers((0, 1), 1),
    ),
    ("every worker succeeded", tj(2), st(), [succeeded(0), succeeded(1)], SucceedJob()),
    ("one done, one still running", tj(2), st(), [succeeded(0), running(1)], Nothing()),
    (
        "suspend stops the workers",
        tj(2, suspend=True),
        st(Phase.SUSPENDED),
        [running(0), running(1)],
        SuspendWorkers(),
    ),
    (
        "suspended with no workers left",
        tj(2, suspend=True),
        st(Phase.SUSPENDED),
        [ObservedWorker(0, "Running", True, 0, deleting=True)],
        Nothing(),
    ),
    (
        "a failure while suspending is not a restart",
        tj(1, suspend=True),
        st(Phase.SUSPENDED),
        [failed(0, 1)],
        SuspendWorkers(),
    ),
    (
        "deadline passed",
        tj(1, activeDeadlineSeconds=60),
        st(start_time=at(30)),
        [running(0)],
        FailJob(Reason.DEADLINE_EXCEEDED, "the job ran longer than activeDeadlineSeconds=60"),
    ),
    (
        "deadline ahead: wait for it",
        tj(1, activeDeadlineSeconds=60),
        st(start_time=at(90)),
        [running(0)],
        Wait(at(150)),
    ),
    (
        "failed job stops workers still running",
        tj(2),
        st(Phase.FAILED, completion_time=at(99)),
        [running(0), failed(1, 65)],
        FailJob(Reason.WORKER_FAILED, ""),
    ),
    (
        "finished job waits for its TTL",
        tj(1, ttlSecondsAfterFinished=60),
        st(Phase.SUCCEEDED, completion_time=at(90)),
        [succeeded(0)],
        Wait(at(150)),
    ),
    (
        "TTL passed deletes the job",
        tj(1, ttlSecondsAfterFinished=10),
        st(Phase.FAILED, completion_time=at(50)),
        [],
        DeleteJob(),
    ),
    (
        "finished without TTL keeps everything",
        tj(1),
        st(Phase.SUCCEEDED, completion_time=at(1)),
        [succeeded(0)],
        Nothing(),
    ),
]


@pytest.mark.parametrize(
    ("job", "status", "workers", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_next_action(job, status, workers, expected):
    assert next_action(job, status, workers, NOW) == expected


@pytest.mark.parametrize(
    ("n", "expected"), [(0, 0), (1, 10), (2, 20), (3, 40), (6, 300), (40, 300)]
)
def test_backoff_doubles_up_to_the_cap(n, expected):
    job = tj(1, failurePolicy={"backoffSeconds": 10, "maxBackoffSeconds": 300})
    assert restart_backoff(job, n) == timedelta(seconds=expected)


def test_second_application_restart_waits_twice_as_long():
    job = tj(1, failurePolicy={"backoffSeconds": 10})
    action = next_action(job, st(restarts=1, application=1), [failed(0, 1, restart=1)], NOW)
    assert action == RestartGang(
        Reason.WORKER_FAILED, 2, NOW + timedelta(seconds=20), "worker 0 exited with code 1"
    )


@pytest.mark.parametrize(
    ("worker", "expected"),
    [
        (running(0), None),
        (succeeded(0), None),
        (failed(0, 1), Reason.WORKER_FAILED),
        (failed(0, 137), Reason.WORKER_FAILED),
        (failed(0, 64), Reason.PERMANENT_EXIT_CODE),
        (failed(0, 75), Reason.PREEMPTED),
        (
            ObservedWorker(0, "Running", True, 0, reason="Preempted", deleting=True),
            Reason.PREEMPTED,
        ),
        (ObservedWorker(0, "Running", True, 0, deleting=True), Reason.EVICTED),
        (ObservedWorker(0, "Unknown", False, 0), Reason.NODE_FAILURE),
    ],
)
def test_classify_failure(worker, expected):
    assert classify_failure(worker, [64, 65, 66]) == expected


def test_a_restart_cycle_end_to_end_counts_once():
    """Derive -> decide -> apply, repeated as a substrate would, through one gang restart."""
    job = tj(2, failurePolicy={"backoffSeconds": 10})
    status = None
    steps = [
        (at(0), []),
        (at(1), [running(0), running(1)]),
        (at(2), [running(0), failed(1, 1)]),
        (at(3), [ObservedWorker(0, "Running", True, 0, deleting=True), failed(1, 1)]),
        (at(4), [failed(1, 1)]),  # kept: its log explains the restart
        (at(13), [failed(1, 1)]),
        (at(14), [running(0, 1), running(1, 1), failed(1, 1)]),
    ]
    actions, phases = [], []
    for now, workers in steps:
        status = derive_status(job, workers, status, now)
        action = next_action(job, status, workers, now)
        status = apply_action(job, status, action, now)
        actions.append(type(action).__name__)
        phases.append(status.phase)
    assert actions == [
        "CreateWorkers",
        "Nothing",
        "RestartGang",
        "Wait",
        "Wait",
        "CreateWorkers",
        "Nothing",
    ]
    assert phases[-1] == Phase.RUNNING
    assert phases[3] == Phase.RESTARTING
    assert status.restarts == 1
    assert status.restarts_by_reason.application == 1


def test_workers_beyond_a_shrunk_gang_are_stopped_without_a_restart():
    action = next_action(tj(1), st(), [running(0), running(1)], NOW)
    assert action == RestartGang(Reason.WORKER_FAILED, 0, None)
    assert apply_action(tj(1), st(), action, NOW).restarts == 0


def test_finished_workers_of_the_failed_generation_do_not_block_the_new_gang():
    status = st(Phase.RESTARTING, restarts=1)
    old = [failed(0, 1, restart=0), succeeded(1, restart=0)]
    assert next_action(tj(2), status, old, NOW) == CreateWorkers((0, 1), 1)
    new = [running(0, 1), running(1, 1)]
    derived = derive_status(tj(2), [*old, *new], status, NOW)
    assert derived.phase == Phase.RUNNING
    assert derived.workers.total == 2


def test_a_still_running_worker_of_an_older_generation_blocks_the_new_gang():
    status = st(Phase.RESTARTING, restarts=2)
    workers = [failed(0, 1, restart=1), running(1, restart=0)]
    assert next_action(tj(2), status, workers, NOW) == RestartGang(Reason.WORKER_FAILED, 2, None)


@pytest.mark.parametrize(
    ("worker", "generation", "is_kept", "is_superseded"),
    [
        (failed(0, 1, restart=1), 2, True, False),  # the generation that just failed
        (succeeded(0, restart=1), 2, True, False),
        (running(0, restart=1), 2, False, True),  # still runs: stopped
        (failed(0, 1, restart=0), 2, False, True),  # two generations back: deleted
        (failed(0, 1, restart=2), 2, False, False),  # the current generation
        (running(3, restart=2), 2, False, True),  # beyond a shrunk gang of 2
    ],
)
def test_which_workers_a_restart_keeps(worker, generation, is_kept, is_superseded):
    assert kept(worker, generation) is is_kept
    assert superseded(worker, generation, replicas=2) is is_superseded


def test_suspending_leaves_the_kept_workers_alone():
    status = st(Phase.SUSPENDED, restarts=1)
    assert next_action(tj(1, suspend=True), status, [failed(0, 1, restart=0)], NOW) == Nothing()


JSON_MESSAGE = json.dumps(
    {"rank": 5, "exitCode": 65, "log": "loading shard 7\nbad record at byte 12\nValueError: x"}
)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            JSON_MESSAGE,
            "worker 1 (rank 5) exited with code 65 (BAD_DATA), which is permanent: "
            "loading shard 7 | bad record at byte 12 | ValueError: x",
        ),
        (
            # FallbackToLogsOnError: the kubelet's copy of the log when the entry process died.
            "Traceback (most recent call last):\n  File x\nSegmentation fault\n",
            "worker 1 exited with code 65 (BAD_DATA), which is permanent: "
            "Traceback (most recent call last): |   File x | Segmentation fault",
        ),
        ("", "worker 1 exited with code 65 (BAD_DATA), which is permanent"),
    ],
    ids=["json", "plain-log-fallback", "none"],
)
def test_a_failure_message_names_the_rank_and_quotes_its_last_lines(message, expected):
    workers = [running(0), failed(1, 65, termination_message=message)]
    assert next_action(tj(2), st(), workers, NOW) == FailJob(Reason.PERMANENT_EXIT_CODE, expected)


def test_the_quoted_log_is_bounded_and_keeps_its_end():
    log = "\n".join(f"line {i} " + "x" * 300 for i in range(50)) + "\nthe real error"
    message = json.dumps({"rank": 0, "exitCode": 1, "log": log})
    action = next_action(
        tj(1, failurePolicy={"backoffSeconds": 0}),
        st(),
        [failed(0, 1, termination_message=message)],
        NOW,
    )
    assert isinstance(action, RestartGang)
    assert action.message.endswith("the real error")
    assert len(f"restart 1: {action.message}") <= 1024  # what an event keeps


def test_max_restarts_message_ends_with_the_log_lines():
    job = tj(1, failurePolicy={"maxRestarts": 0})
    worker = failed(0, 1, termination_message="CUDA error: out of memory")
    assert next_action(job, st(), [worker], NOW) == FailJob(
        Reason.MAX_RESTARTS_EXCEEDED,
        "worker 0 exited with code 1; 0 application restarts used, maxRestarts is 0: "
        "CUDA error: out of memory",
    )
