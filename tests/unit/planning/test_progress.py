"""Progress and checkpoints from rank 0's /metrics text."""

from __future__ import annotations

from planning_fakes import at

from carina.platform.api.types import CheckpointStatus
from carina.platform.planning.progress import (
    newer_checkpoint,
    parse_checkpoint_step,
    parse_progress,
)

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
    assert newer_checkpoint(None, 300, "s3://b/ns/llm/", at(2)) == CheckpointStatus(
        step=300, uri="s3://b/ns/llm/step-00000300", time=at(2)
    )
    acked = CheckpointStatus(step=300, uri="s3://b/ns/llm/step-00000300", time=at(1))
    assert newer_checkpoint(acked, 300, "s3://b/ns/llm", at(2)) is None
    assert newer_checkpoint(acked, 200, "s3://b/ns/llm", at(2)) is None
    assert newer_checkpoint(acked, 400, "s3://b/ns/llm", at(2)).step == 400
