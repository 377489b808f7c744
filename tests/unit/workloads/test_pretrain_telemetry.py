"""Worker telemetry: the exported metric names and labels, and the progress file."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

from carina.workloads import metric_names as names
from carina.workloads.config import ModelSpec
from carina.workloads.runtime.checkpoint import CheckpointRef
from carina.workloads.runtime.flops import flops_per_token, mfu, sequence_flops
from carina.workloads.runtime.telemetry import Telemetry, write_termination_message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_endpoint_exports_the_named_metrics_with_bounded_labels(tmp_path: Path) -> None:
    port = free_port()
    t = Telemetry(
        "job-a", "team-a", 0, total_steps=10, port=port, progress_file=str(tmp_path / "p.json")
    )
    try:
        t.on_step(3, loss=2.5, lr=1e-3, tokens=512, tokens_per_second=1000.0, mfu=0.4)
        t.on_checkpoint(CheckpointRef(3, "s3://b/job-a/step-00000003"), seconds=1.5)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    finally:
        t.close()
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


def test_progress_file_holds_what_the_substrate_reads(tmp_path: Path) -> None:
    t = Telemetry("j", "n", 0, total_steps=10, progress_file=str(tmp_path / "p.json"))
    t.on_step(4, loss=2.0, lr=1e-3, tokens=10, tokens_per_second=50.0, mfu=0.0)
    t.on_checkpoint(CheckpointRef(4, "file:///c/step-00000004"), seconds=0.1)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["step"] == 4
    assert doc["totalSteps"] == 10
    assert doc["loss"] == 2.0
    assert doc["tokensPerSecond"] == 50.0
    assert doc["updatedAt"].endswith("Z")
    assert doc["lastCheckpoint"]["step"] == 4


def test_only_rank_0_writes_progress(tmp_path: Path) -> None:
    t = Telemetry("j", "n", 1, total_steps=10, progress_file=str(tmp_path / "p.json"))
    t.on_step(1, 1.0, 1e-3, 1, 1.0, 0.0)
    assert not (tmp_path / "p.json").exists()


def test_termination_message_is_ignored_where_it_cannot_be_written(tmp_path: Path) -> None:
    ref = CheckpointRef(7, "s3://b/p/step-00000007")
    assert write_termination_message(ref, str(tmp_path / "no" / "such" / "dir" / "log")) is False
    assert write_termination_message(ref, str(tmp_path / "log")) is True
    assert json.loads((tmp_path / "log").read_text()) == {
        "checkpoint": {"step": 7, "uri": "s3://b/p/step-00000007"}
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
