"""Staged pretraining: stage to stage, stage-end checkpoints kept, exact resume inside a stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from workload_builders import tiny_config

from carina.workloads.config import ExitCode, PretrainConfig
from carina.workloads.errors import WorkerError
from carina.workloads.pretrain.run import StepRecord, run_pretrain
from carina.workloads.runtime.distributed import PreemptionFlag
from carina.workloads.worker import WorkerContext

torch.set_num_threads(1)


def staged_config(**overrides: Any) -> PretrainConfig:
    """Two stages: short windows of sums, then 2x longer windows of sums and stdlib packages."""
    doc: dict[str, Any] = {
        "steps": 14,
        "evalEvery": 0,
        "sources": {
            "sums": {"source": "synthetic"},
            "code": {"source": "python-stdlib", "packing": "repository", "maxBytes": 300_000},
        },
        "stages": [
            {"name": "short", "steps": 6, "seqLen": 32, "mixture": {"sums": 1}},
            {
                "name": "long",
                "steps": 8,
                "seqLen": 64,
                "ropeTheta": 40000.0,
                "mixture": {"sums": 1, "code": 1},
                "schedule": {"kind": "cosine", "warmupSteps": 2},
            },
        ],
    }
    doc.update(overrides)
    return tiny_config(**doc)


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run(
    cfg: PretrainConfig, uri: str, tmp_path: Path, stop_at: int | None = None
) -> tuple[ExitCode, list[float]]:
    losses: list[float] = []

    def on_step(rec: StepRecord, preempt: PreemptionFlag) -> None:
        losses.append(rec.loss)
        if rec.step == stop_at:
            preempt.request()  # what SIGTERM's handler does

    ctx = WorkerContext(
        checkpoint_uri=uri, checkpoint_keep=1, termination_log=str(tmp_path / "term")
    )
    return run_pretrain(cfg, ctx, on_step), losses


def test_preempted_mid_stage_two_resumes_in_stage_two_at_its_step_seq_len_and_theta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = staged_config()
    code, straight = run(cfg, f"file://{tmp_path}/a", tmp_path)
    assert code == ExitCode.SUCCEEDED
    assert len(straight) == 14
    capsys.readouterr()

    # Preempted on stage 1's last step: the resumed run starts stage 2 afresh, as the
    # uninterrupted one did.
    code, first = run(cfg, f"file://{tmp_path}/edge", tmp_path, stop_at=6)
    assert code == ExitCode.PREEMPTED
    code, second = run(cfg, f"file://{tmp_path}/edge", tmp_path)
    assert code == ExitCode.SUCCEEDED
    assert first + second == straight
    capsys.readouterr()

    code, first = run(cfg, f"file://{tmp_path}/b", tmp_path, stop_at=10)
    assert code == ExitCode.PREEMPTED
    trainer = json.loads((tmp_path / "b/step-00000010/manifest.json").read_text())["trainer"]
    assert trainer["stage"] == {
        "index": 1,
        "name": "long",
        "step": 4,
        "seqLen": 64,
        "ropeTheta": 40000.0,
    }
    # 6 steps of 8 sequences of 32 tokens, then 4 of 64.
    assert trainer["tokensSeen"] == 6 * 8 * 32 + 4 * 8 * 64
    capsys.readouterr()

    code, second = run(cfg, f"file://{tmp_path}/b", tmp_path)
    assert code == ExitCode.SUCCEEDED
    start = next(e for e in events(capsys.readouterr().out) if e["event"] == "start")
    assert (start["step"], start["stage"], start["stageStep"]) == (10, "long", 4)
    assert (start["seqLen"], start["ropeTheta"]) == (64, 40000.0)
    # The sampler and the stage's own schedule pick up exactly: loss for loss, bit for bit.
    assert first + second == straight


def test_stage_end_checkpoints_are_kept_and_record_their_theta(tmp_path: Path) -> None:
    code, _ = run(staged_config(), f"file://{tmp_path}/c", tmp_path)
    assert code == ExitCode.SUCCEEDED
    # keep=1 prunes interval saves, never a stage's end.
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "step-00000006",
        "step-00000014",
    ]
    short = json.loads((tmp_path / "c/step-00000006/manifest.json").read_text())
    long = json.loads((tmp_path / "c/step-00000014/manifest.json").read_text())
    assert short["architecture"]["rope_theta"] == 10000.0
    assert long["architecture"]["rope_theta"] == 40000.0
    assert short["trainer"]["stage"]["name"] == "short"


def test_stage_change_is_logged_with_its_length_and_mixture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(staged_config(), f"file://{tmp_path}/d", tmp_path)
    logged = events(capsys.readouterr().out)
    change = next(e for e in logged if e["event"] == "stage")
    assert change["step"] == 6
    assert change["stage"] == "long"
    assert change["mixture"] == {"sums": 1.0, "code": 1.0}
    stages = [e.get("stage") for e in logged if e["event"] == "step"]
    assert stages == ["short"] * 6 + ["long"] * 8


def test_resuming_with_renamed_stages_is_refused_naming_the_stage(tmp_path: Path) -> None:
    cfg = staged_config()
    code, _ = run(cfg, f"file://{tmp_path}/e", tmp_path, stop_at=10)
    assert code == ExitCode.PREEMPTED
    renamed = staged_config()
    assert renamed.stages is not None
    renamed.stages[1].name = "longer"
    with pytest.raises(WorkerError) as e:
        run(renamed, f"file://{tmp_path}/e", tmp_path)
    assert e.value.exit_code == ExitCode.BAD_CONFIG
    assert "'long'" in str(e.value)
