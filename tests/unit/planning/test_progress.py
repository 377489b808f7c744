"""Progress, checkpoints and damaged checkpoints from rank 0's /metrics text, the one channel
both substrates read; and how the engine folds them, and rank 0's final word, into status."""

from __future__ import annotations

from planning_fakes import at, running, succeeded, tj

from carina.platform.api.reasons import Reason
from carina.platform.api.types import (
    CheckpointStatus,
    Progress,
    TrainingJobStatus,
)
from carina.platform.planning.engine import plan
from carina.platform.planning.progress import (
    checkpoint_at,
    damaged_message,
    parse_checkpoint_step,
    parse_damaged,
    parse_progress,
    read_scrape,
)
from carina.workloads.contract import TerminationMessage

LABELS = 'job="llm",namespace="ns",rank="0"'
METRICS = f"""# HELP carina_checkpoint_last_step Step of the newest checkpoint
# TYPE carina_checkpoint_last_step gauge
carina_checkpoint_last_step{{{LABELS}}} 300.0
carina_checkpoint_save_seconds_count{{{LABELS}}} 3.0
carina_worker_step{{{LABELS}}} 317.0
"""


def test_the_checkpoint_gauge_gives_the_newest_saved_step():
    assert parse_checkpoint_step(METRICS) == 300
    assert parse_progress(METRICS, at(1)).step == 317  # the gauge is not the training step


def test_no_checkpoint_before_the_first_save():
    before = f"carina_checkpoint_last_step{{{LABELS}}} 0.0\ncarina_worker_step{{{LABELS}}} 5\n"
    assert parse_checkpoint_step(before) is None
    assert parse_checkpoint_step("carina_worker_step 5\n") is None


def test_a_newer_step_becomes_the_last_checkpoint_under_the_job_root():
    assert checkpoint_at("s3://b/ns/llm/", 300, at(2)) == CheckpointStatus(
        step=300, uri="s3://b/ns/llm/step-00000300", time=at(2)
    )
    acked = CheckpointStatus(step=300, uri="s3://b/ns/llm/step-00000300", time=at(1))
    job = tj().model_copy(update={"status": TrainingJobStatus(last_checkpoint=acked)})
    workers = [running(0), running(1)]

    def last(step: int) -> CheckpointStatus | None:
        reported = checkpoint_at("s3://b/ns/llm", step, at(2))
        return plan(job, workers, at(2), checkpoint=reported).status.last_checkpoint

    assert last(300) == acked
    assert last(200) == acked  # an older report never moves it back
    assert last(400) == checkpoint_at("s3://b/ns/llm", 400, at(2))


LABELS_0 = 'job="llm",namespace="ns",rank="0"'
DAMAGED = (
    f'carina_checkpoint_damaged{{{LABELS_0},step="400",uri="s3://b/ns/llm/step-00000400",'
    'file="model.safetensors",reason="size 10 bytes, manifest says \\"4096\\""} 1.0\n'
)


def test_damaged_checkpoints_are_read_from_their_labels():
    [damaged] = parse_damaged(METRICS + DAMAGED)
    assert damaged.step == 400
    assert damaged.uri == "s3://b/ns/llm/step-00000400"
    assert damaged.file == "model.safetensors"
    assert damaged.reason == 'size 10 bytes, manifest says "4096"'  # unescaped
    assert parse_damaged(METRICS) == ()
    # The labels do not disturb the other values, nor theirs the damaged ones.
    scrape = read_scrape(DAMAGED + METRICS, at(1))
    assert scrape.progress is not None
    assert scrape.progress.step == 317
    assert scrape.checkpoint_step == 300
    assert scrape.damaged == (damaged,)
    assert damaged_message(damaged) == (
        "checkpoint at step 400 is damaged and was passed over for an older one:"
        f" model.safetensors: {damaged.reason} (s3://b/ns/llm/step-00000400)"
    )


def test_a_step_of_0_is_no_report_yet():
    # A restarted worker exports 0 until its first step: status keeps what it knows.
    assert parse_progress(f"carina_worker_step{{{LABELS_0}}} 0.0\n", at(1)) is None


def test_a_damaged_checkpoint_is_recorded_warned_about_once_and_not_offered():
    job = tj()
    workers = [running(0), running(1)]
    bad = parse_damaged(DAMAGED)
    intact = checkpoint_at("s3://b/ns/llm", 300, at(1))
    damaged_last = CheckpointStatus(step=400, uri="s3://b/ns/llm/step-00000400", time=at(0))
    previous = TrainingJobStatus(last_checkpoint=damaged_last)
    first = plan(
        job.model_copy(update={"status": previous}),
        workers,
        at(1),
        checkpoint=intact,
        damaged=bad,
    )
    assert first.status.damaged_checkpoints == list(bad)
    assert first.status.last_checkpoint == intact  # the damaged one is no longer offered
    warnings = [e for e in first.events if e.reason == Reason.CHECKPOINT_CORRUPT]
    assert [(e.type, e.message) for e in warnings] == [("Warning", damaged_message(bad[0]))]
    again = plan(job.model_copy(update={"status": first.status}), workers, at(2), damaged=bad)
    assert not [e for e in again.events if e.reason == Reason.CHECKPOINT_CORRUPT]
    assert again.status.damaged_checkpoints == list(bad)
    # The worker trains on and saves step 400 again, over the damaged one: that is intact.
    resaved = checkpoint_at("s3://b/ns/llm", 400, at(3))
    later = plan(
        job.model_copy(update={"status": again.status}),
        workers,
        at(3),
        checkpoint=resaved,
        damaged=bad,
    )
    assert later.status.last_checkpoint == resaved
    assert not [e for e in later.events if e.reason == Reason.CHECKPOINT_CORRUPT]


def test_the_final_word_wins_over_the_last_scrape_and_status_keeps_progress_without_news():
    job = tj()
    said = TerminationMessage(
        step=1000, total_steps=1000, loss=1.5, checkpoint_step=1000, checkpoint_uri="s3://c"
    )
    scraped = Progress(
        step=990, total_steps=1000, loss=1.6, tokens_per_second=9.0, updated_at=at(1)
    )
    status = TrainingJobStatus(phase="Running", progress=scraped)
    quiet = plan(job.model_copy(update={"status": status}), [running(0), running(1)], at(2))
    assert quiet.status.progress == scraped  # no news: status is the memory
    workers = [succeeded(0, termination_message=said.to_text(), finished_at=at(3)), running(1)]
    done = plan(job.model_copy(update={"status": status}), workers, at(4), progress=scraped)
    assert done.status.progress == Progress(
        step=1000, total_steps=1000, loss=1.5, tokens_per_second=9.0, updated_at=at(3)
    )
    assert done.status.last_checkpoint == CheckpointStatus(step=1000, uri="s3://c", time=at(3))
    # Read again on the next reconcile: nothing changes.
    later = plan(job.model_copy(update={"status": done.status}), workers, at(5), progress=scraped)
    assert later.status.progress == done.status.progress


def test_a_final_word_of_an_older_generation_does_not_overwrite_the_new_one():
    job = tj()
    old = TerminationMessage(step=50).to_text()
    status = TrainingJobStatus(
        phase="Running", restarts=1, progress=Progress(step=70, updated_at=at(1))
    )
    workers = [succeeded(0, restart=0, termination_message=old), running(0, restart=1)]
    decided = plan(job.model_copy(update={"status": status}), workers, at(2))
    assert decided.status.progress is not None
    assert decided.status.progress.step == 70


def test_the_time_spent_saving_is_read_from_the_save_histogram():
    text = METRICS + f"carina_checkpoint_save_seconds_sum{{{LABELS}}} 4.5\n"
    assert parse_progress(text, at(1)).checkpoint_seconds == 4.5
    assert parse_progress(METRICS, at(1)).checkpoint_seconds is None


def test_rank_zeros_median_step_time_and_every_ranks_compute_time_are_read():
    text = (
        METRICS
        + f"carina_worker_step_seconds{{{LABELS}}} 0.25\n"
        + 'carina_worker_rank_step_seconds{job="llm",namespace="ns",rank="0"} 0.21\n'
        + 'carina_worker_rank_step_seconds{job="llm",namespace="ns",rank="1"} 0.48\n'
        + 'carina_worker_rank_step_seconds{job="llm",namespace="ns",rank="x"} 9\n'
        + 'carina_worker_rank_step_seconds{job="llm",namespace="ns",rank="2"} 0\n'
    )
    scrape = read_scrape(text, at(1))
    assert scrape.progress is not None
    assert scrape.progress.step_seconds == 0.25
    assert scrape.progress.stepped_at == at(1)
    assert scrape.rank_seconds == {0: 0.21, 1: 0.48}  # not a rank, or not timed yet: left out


def test_a_worker_without_step_times_reports_none():
    scrape = read_scrape(METRICS + f"carina_worker_step_seconds{{{LABELS}}} 0\n", at(1))
    assert scrape.progress is not None
    assert scrape.progress.step_seconds is None
    assert scrape.rank_seconds == {}
