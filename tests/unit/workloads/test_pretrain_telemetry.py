"""Worker telemetry: the exported metric names and labels, what the platform reads from them,
and rank 0's final word."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import generate_latest

from carina.platform.api.types import DamagedCheckpoint
from carina.platform.planning.progress import Scrape, read_scrape
from carina.workloads import metric_names as names
from carina.workloads.config import ModelSpec
from carina.workloads.contract import TERMINATION_MESSAGE_LIMIT, TerminationMessage
from carina.workloads.runtime.checkpoint_refs import CheckpointRef, SkippedCheckpoint
from carina.workloads.runtime.flops import flops_per_token, mfu, sequence_flops
from carina.workloads.runtime.telemetry import Telemetry, write_termination_message


def test_the_registry_exports_the_named_metrics_with_bounded_labels() -> None:
    # The text the endpoint serves; served over HTTP: tests/integration/processes/
    # test_metrics_endpoint.py.
    t = Telemetry("job-a", "team-a", 0, total_steps=10)
    t.on_step(3, loss=2.5, lr=1e-3, tokens=512, tokens_per_second=1000.0, mfu=0.4)
    t.on_checkpoint(CheckpointRef(3, "s3://b/job-a/step-00000003"), seconds=1.5)
    body = generate_latest(t.registry).decode()
    labels = 'job="job-a",namespace="team-a",rank="0"'
    assert f"{names.WORKER_STEP}{{{labels}}} 3.0" in body
    assert f"{names.WORKER_LOSS}{{{labels}}} 2.5" in body
    assert f"{names.WORKER_TOKENS_TOTAL}{{{labels}}} 512.0" in body
    assert f"{names.CHECKPOINT_LAST_STEP}{{{labels}}} 3.0" in body
    assert f"{names.CHECKPOINT_SAVE_SECONDS}_count{{{labels}}} 1.0" in body
    exported = {
        line.split("{")[0].split(" ")[0] for line in body.splitlines() if line.startswith("carina_")
    }
    declared = set(names.ALL) | {
        f"{names.CHECKPOINT_SAVE_SECONDS}_{s}" for s in ("bucket", "sum", "count", "created")
    }
    declared |= {n.removesuffix("_total") + "_created" for n in names.ALL if n.endswith("_total")}
    assert exported <= declared


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def scraped(t: Telemetry) -> Scrape:
    """What a substrate reads from this worker's /metrics (the same text the endpoint serves)."""
    return read_scrape(generate_latest(t.registry).decode(), NOW)


def test_the_metrics_hold_what_the_substrates_read() -> None:
    t = Telemetry("j", "n", 0, total_steps=10)
    t.on_step(4, loss=2.0, lr=1e-3, tokens=10, tokens_per_second=50.0, mfu=0.0)
    t.on_checkpoint(CheckpointRef(4, "file:///c/step-00000004"), seconds=0.1)
    scrape = scraped(t)
    assert scrape.progress is not None
    assert scrape.progress.step == 4
    assert scrape.progress.total_steps == 10
    assert scrape.progress.loss == 2.0
    assert scrape.progress.tokens_per_second == 50.0
    assert scrape.progress.updated_at == NOW
    assert scrape.checkpoint_step == 4
    assert scrape.damaged == ()


def test_a_restarted_worker_reports_no_progress_until_its_first_step() -> None:
    # Status keeps the last progress it knows meanwhile; the resumed checkpoint is reported.
    t = Telemetry("j", "n", 0, total_steps=10)
    t.on_resume(CheckpointRef(4, "file:///c/step-00000004"))
    scrape = scraped(t)
    assert scrape.progress is None
    assert scrape.checkpoint_step == 4
    t.on_step(5, loss=1.5, lr=1e-3, tokens=10, tokens_per_second=5.0, mfu=0.0)
    progress = scraped(t).progress
    assert progress is not None
    assert (progress.step, progress.loss) == (5, 1.5)


def test_a_damaged_checkpoint_is_exported_for_the_whole_attempt() -> None:
    # However seldom a substrate scrapes, it sees what the resume passed over; the checkpoint
    # gauge tells it when a save has replaced one (a step at or past the damaged one).
    t = Telemetry("j", "n", 0, total_steps=10)
    uri = "file:///c/step-00000006"
    t.on_checkpoint_skipped(SkippedCheckpoint(6, uri, "model.safetensors", "size 10 bytes"))
    t.on_resume(CheckpointRef(4, "file:///c/step-00000004"))
    damaged = DamagedCheckpoint(step=6, uri=uri, file="model.safetensors", reason="size 10 bytes")
    assert scraped(t).damaged == (damaged,)
    t.on_checkpoint(CheckpointRef(6, uri), seconds=0.1)
    assert scraped(t).damaged == (damaged,)
    assert scraped(t).checkpoint_step == 6


def test_the_final_word_carries_the_last_step_and_the_newest_checkpoint() -> None:
    t = Telemetry("j", "n", 0, total_steps=10)
    t.on_step(9, loss=1.25, lr=1e-3, tokens=10, tokens_per_second=5.0, mfu=0.0)
    t.on_checkpoint(CheckpointRef(8, "s3://b/p/step-00000008"), seconds=0.1)
    said = TerminationMessage.parse(t.final_word(10).to_text())
    assert said == TerminationMessage(
        step=10,
        total_steps=10,
        loss=1.25,
        checkpoint_step=8,
        checkpoint_uri="s3://b/p/step-00000008",
    )
    ref = CheckpointRef(10, "s3://b/p/step-00000010")
    assert t.final_word(10, ref).checkpoint_step == 10


def test_termination_message_is_ignored_where_it_cannot_be_written(tmp_path: Path) -> None:
    message = TerminationMessage(step=7, checkpoint_step=7, checkpoint_uri="s3://b/p/step-00000007")
    nowhere = str(tmp_path / "no" / "such" / "dir" / "log")
    assert write_termination_message(message, nowhere) is False
    assert write_termination_message(message, str(tmp_path / "log")) is True
    assert json.loads((tmp_path / "log").read_text()) == {
        "progress": {"step": 7},
        "checkpoint": {"step": 7, "uri": "s3://b/p/step-00000007"},
    }


def test_mfu_follows_the_palm_formula() -> None:
    arch = ModelSpec(preset="350m").resolve()
    per_token = flops_per_token(300_000_000, arch, 2048)
    assert per_token == 6 * 300e6 + 12 * 24 * 1024 * 2048
    assert mfu(100_000, per_token, 989e12, 1) == 100_000 * per_token / 989e12
    assert mfu(100_000, per_token, None, 1) is None  # unknown, not 0


def test_sequences_of_different_lengths_cost_their_own_attention() -> None:
    arch = ModelSpec(preset="tiny").resolve()
    n = 1_000_000
    assert sequence_flops(n, arch, [64, 64]) == 2 * 64 * flops_per_token(n, arch, 64)
    assert sequence_flops(n, arch, [10, 30]) == 10 * flops_per_token(
        n, arch, 10
    ) + 30 * flops_per_token(n, arch, 30)
    assert sequence_flops(n, arch, [10, 30]) < 40 * flops_per_token(n, arch, 30)


def test_the_final_word_keeps_within_the_termination_message_limit() -> None:
    said = TerminationMessage(
        step=123_456_789,
        total_steps=200_000_000,
        loss=1.2345678901234567,
        checkpoint_step=123_456_000,
        checkpoint_uri="s3://bucket/" + "a" * 500 + "/step-123456000",
        rank=3,
        exit_code=75,
        log_tail="x" * 10_000 + "\nthe last line",
    )
    text = said.to_text()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    parsed = TerminationMessage.parse(text)
    assert parsed is not None
    assert (parsed.step, parsed.total_steps, parsed.loss) == (123_456_789, 200_000_000, said.loss)
    assert (parsed.checkpoint_step, parsed.checkpoint_uri) == (123_456_000, said.checkpoint_uri)
    assert parsed.log_tail.endswith("the last line")


def test_a_final_word_that_is_not_ours_says_no_step() -> None:
    for progress in ({"step": True}, {"step": "7"}, {"step": 7.5}, "7", None):
        parsed = TerminationMessage.parse(json.dumps({"progress": progress, "rank": 1}))
        assert parsed is not None
        assert parsed.step is None
        assert parsed.rank == 1
    nan = TerminationMessage.parse('{"progress": {"step": 3, "loss": NaN}}')
    assert nan is not None
    assert (nan.step, nan.loss) == (3, None)
