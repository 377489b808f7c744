"""The vision workload in the shared run loop: two phases, the teacher's final checkpoint,
preemption and resume in either phase, the report next to the checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from carina.workloads.config import VISION_RECIPES, ExitCode, VisionConfig
from carina.workloads.contract import WorkerContext
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.distributed import PreemptionFlag
from carina.workloads.runtime.loop import StepRecord
from carina.workloads.runtime.storage import open_store
from carina.workloads.vision.run import run_vision

torch.set_num_threads(1)
# 250 training images at ratio 100, batches of 32: 8 steps an epoch.
STEPS_PER_EPOCH = 8


def config(recipe: str = "deit-lt", **overrides: Any) -> VisionConfig:
    doc: dict[str, Any] = {
        **VISION_RECIPES[recipe],
        "epochs": 2,
        "batchSize": 32,
        "logEvery": 1,
        "schedule": {"kind": "cosine", "warmupSteps": 2},
    }
    if recipe != "vit":
        doc["teacher"] = {**doc.get("teacher", {}), "epochs": 2}
    for key, value in overrides.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    return VisionConfig.model_validate(doc)


def events(out: str, name: str | None = None) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [e for e in found if name is None or e["event"] == name]


def context(tmp_path: Path) -> WorkerContext:
    return WorkerContext(checkpoint_uri=f"file://{tmp_path}/run", checkpoint_interval=4)


def preempt_at(step: int):
    def on_step(record: StepRecord, flag: PreemptionFlag) -> None:
        if record.step == step:
            flag.request()

    return on_step


def test_deit_lt_trains_the_teacher_then_the_student_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_vision(config(), context(tmp_path)) == ExitCode.SUCCEEDED
    out = capsys.readouterr().out
    steps = events(out, "step")
    teacher_steps = 2 * STEPS_PER_EPOCH
    assert [e["step"] for e in steps] == list(range(1, 2 * teacher_steps + 1))
    assert {e["phase"] for e in steps[:teacher_steps]} == {"teacher"}
    assert {e["phase"] for e in steps[teacher_steps:]} == {"student"}
    assert all("distill" in e and "ce" in e for e in steps[teacher_steps:])
    # the teacher's final checkpoint, which the student phase loads
    [saved] = events(out, "teacher_saved")
    [loaded] = events(out, "teacher_loaded")
    assert saved["step"] == loaded["step"] == teacher_steps
    teacher_store = open_store(f"file://{tmp_path}/run/teacher")
    assert checkpoint.complete_steps(teacher_store) == [teacher_steps]
    # the root keeps the student phase's checkpoints only
    root = open_store(f"file://{tmp_path}/run")
    for step in checkpoint.complete_steps(root):
        assert checkpoint.read_manifest(root, step)["trainer"]["phase"] == "student"
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert set(report["student"]) == {"cls", "dist", "avg"}
    assert report["teacher"]["overall"] > 0.1  # better than chance on 10 classes
    assert report["recipe"] == {
        "distill": True,
        "teacherSam": True,
        "oodAugmentation": True,
        "drw": True,
    }
    assert report["trainCounts"] == [100, 60, 36, 22, 13, 8, 5, 3, 2, 1]
    assert "| student | avg |" in (tmp_path / "run" / "report.md").read_text()


def test_a_plain_vit_has_no_teacher_phase_and_one_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_vision(config("vit"), context(tmp_path)) == ExitCode.SUCCEEDED
    out = capsys.readouterr().out
    [start] = events(out, "start")
    assert start["teacherSteps"] == 0
    assert start["teacherParams"] == 0
    steps = events(out, "step")
    assert len(steps) == 2 * STEPS_PER_EPOCH
    assert {e["phase"] for e in steps} == {"student"}
    assert not any("distill" in e for e in steps)
    assert not events(out, "teacher_saved")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert set(report["student"]) == {"cls", "avg"}
    assert report["teacher"] is None


def test_drw_weights_the_distillation_loss_only_late_and_only_when_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = config(epochs=4, distill={"drwStart": 0.5})
    assert run_vision(cfg, WorkerContext()) == ExitCode.SUCCEEDED
    student = [e for e in events(capsys.readouterr().out, "step") if e["phase"] == "student"]
    assert [e["drw"] for e in student] == [False] * 16 + [True] * 16  # epochs 2 and 3 of 4
    off = config("deit", epochs=4, distill={"drwStart": 0.5})
    assert run_vision(off, WorkerContext()) == ExitCode.SUCCEEDED
    student = [e for e in events(capsys.readouterr().out, "step") if e["phase"] == "student"]
    assert not any(e["drw"] for e in student)


def test_preempted_student_resumes_at_its_step_with_the_teachers_final_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = 2 * STEPS_PER_EPOCH + 5  # inside the student phase
    assert run_vision(config(), context(tmp_path), preempt_at(stop)) == ExitCode.PREEMPTED
    first = capsys.readouterr().out
    assert events(first, "preempted")[0]["step"] == stop
    assert run_vision(config(), context(tmp_path)) == ExitCode.SUCCEEDED
    second = capsys.readouterr().out
    [resumed] = events(second, "resumed")
    assert resumed["step"] == stop  # where it stopped, not the start of either phase
    [loaded] = events(second, "teacher_loaded")
    assert loaded["step"] == 2 * STEPS_PER_EPOCH
    steps = events(second, "step")
    assert [e["step"] for e in steps] == list(range(stop + 1, 4 * STEPS_PER_EPOCH + 1))
    assert {e["phase"] for e in steps} == {"student"}  # the teacher is not trained again


def test_preempted_teacher_resumes_in_the_teacher_phase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_vision(config(), context(tmp_path), preempt_at(6)) == ExitCode.PREEMPTED
    capsys.readouterr()
    assert not (tmp_path / "run" / "teacher").exists()
    assert run_vision(config(), context(tmp_path)) == ExitCode.SUCCEEDED
    out = capsys.readouterr().out
    [resumed] = events(out, "resumed")
    assert resumed["step"] == 6
    steps = events(out, "step")
    assert steps[0]["step"] == 7
    assert steps[0]["phase"] == "teacher"
    assert len(events(out, "teacher_saved")) == 1
