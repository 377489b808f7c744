"""Where GPU time went: the account the lifecycle engine keeps in status.goodput."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from carina.platform.api.reasons import Reason
from carina.platform.api.types import (
    CheckpointStatus,
    Phase,
    TrainingJob,
    TrainingJobStatus,
    WorkerCounts,
)
from carina.platform.planning.actions import Nothing, RestartGang
from carina.platform.planning.goodput import account

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job() -> TrainingJob:
    return TrainingJob.parse(
        {
            "metadata": {"name": "llm", "namespace": "ns"},
            "spec": {
                "replicas": 2,
                "cluster": "vela",
                "resources": {"gpus": 8},
                "workload": {"pretrain": {"model": {"preset": "tiny"}, "steps": 200}},
            },
        }
    )


def status(phase: Phase, workers: int, **kw: object) -> TrainingJobStatus:
    return TrainingJobStatus(phase=phase, workers=WorkerCounts(total=workers), **kw)  # type: ignore[arg-type]


def test_gpus_held_while_running_are_allocated_and_productive() -> None:
    first = status(Phase.RUNNING, 2)
    first.goodput = account(job(), None, first, Nothing(), T0)
    later = status(Phase.RUNNING, 2)
    g = account(job(), first, later, Nothing(), T0 + timedelta(seconds=100))
    assert g.allocated == 2 * 8 * 100
    assert g.productive == g.allocated


def test_a_restart_loses_the_work_since_the_last_checkpoint_and_pauses_count() -> None:
    running = status(
        Phase.RUNNING,
        2,
        start_time=T0,
        last_checkpoint=CheckpointStatus(
            step=10, uri="s3://c/step-10", time=T0 + timedelta(seconds=60)
        ),
    )
    running.goodput = account(job(), None, running, Nothing(), T0)
    at = T0 + timedelta(seconds=100)
    failed = running.model_copy(update={"phase": Phase.RESTARTING, "restarts": 1})
    g = account(job(), running, failed, RestartGang(Reason.WORKER_FAILED, 1), at)
    assert g.allocated == 16 * 100
    assert g.lost_to_failures == 16 * 40  # 40 s since the checkpoint, 16 GPUs
    failed.goodput = g
    # 20 s restarting with both workers holding their GPUs: a pause, not training.
    again = failed.model_copy(update={"phase": Phase.RUNNING})
    g = account(job(), failed, again, Nothing(), at + timedelta(seconds=20))
    assert g.restart_pauses == 16 * 20
    assert g.productive == 16 * 120 - 16 * 40 - 16 * 20


def test_waiting_for_quota_counts_wall_time_not_gpus() -> None:
    queued = status(Phase.QUEUED, 0)
    queued.goodput = account(job(), None, queued, Nothing(), T0)
    g = account(job(), queued, queued, Nothing(), T0 + timedelta(minutes=5))
    assert g.queue_wait_seconds == 300
    assert g.allocated == 0


def test_a_finished_jobs_account_is_closed() -> None:
    done = status(Phase.SUCCEEDED, 2)
    done.goodput = account(job(), None, done, Nothing(), T0)
    g = account(job(), done, done, Nothing(), T0 + timedelta(hours=1))
    assert g == done.goodput


def test_time_every_rank_spends_saving_is_booked_once_per_report() -> None:
    from carina.platform.api.types import Progress

    first = status(Phase.RUNNING, 2, progress=Progress(step=10, checkpoint_seconds=3.0))
    first.goodput = account(job(), None, first, Nothing(), T0)
    assert first.goodput.checkpoint_saves == 16 * 3.0
    later = status(Phase.RUNNING, 2, progress=Progress(step=20, checkpoint_seconds=5.0))
    g = account(job(), first, later, Nothing(), T0 + timedelta(seconds=100))
    assert g.checkpoint_saves == 16 * 5.0  # 2 more seconds of saving, all 16 GPUs
    assert g.productive == 16 * 100 - 16 * 5.0
    # A restarted attempt's running sum starts again from 0: its 1.5 s are new.
    later.goodput = g
    again = status(Phase.RUNNING, 2, progress=Progress(step=25, checkpoint_seconds=1.5))
    g = account(job(), later, again, Nothing(), T0 + timedelta(seconds=110))
    assert g.checkpoint_saves == 16 * 6.5
