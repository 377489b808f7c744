"""The run loop every workload shares: interval saves, SIGTERM, telemetry, setup and teardown.

A counting workload (a tiny model it never trains) stands in for pretraining, fine-tuning and
QAT: what is checked here holds for each of them because they all run this loop.
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from carina.workloads import metric_names
from carina.workloads.config import ExitCode, ModelSpec
from carina.workloads.contract import WorkerContext
from carina.workloads.models.transformer import Transformer
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.distributed import Dist, PreemptionFlag
from carina.workloads.runtime.loop import (
    RunLoop,
    StepRecord,
    StepReport,
    Workload,
    run_workload,
)
from carina.workloads.runtime.storage import open_store

TOKENS = 100  # per step
FLOPS = 5e8  # per step


class Counting(Workload):
    """Steps that only count; its checkpoints are real ones of a tiny model."""

    def __init__(
        self,
        ctx: WorkerContext,
        total: int,
        log_every: int = 1,
        preempt: PreemptionFlag | None = None,
        flops: float | None = FLOPS,
        rank: int = 0,
    ) -> None:
        self.d = Dist(rank=rank, world_size=1, local_rank=0, device=torch.device("cpu"))
        self.loop = RunLoop(self, ctx, self.d, preempt or PreemptionFlag(), total, log_every)
        torch.manual_seed(0)
        spec = ModelSpec(preset="tiny", d_model=16, n_layers=1, n_heads=2, n_kv_heads=2)
        self.raw = Transformer(spec.resolve())
        self.arch = self.raw.arch
        self.optimizer = torch.optim.AdamW(self.raw.parameters())
        self.flops = flops
        self.step = 0
        self.finished = False
        self.loop.resume()

    def train_step(self) -> StepReport:
        self.step += 1
        return StepReport(float(self.step), 0.1, TOKENS, self.flops, {"extra": self.step})

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "marker": "counting"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])

    def finish(self) -> None:
        self.finished = True


def context(tmp_path: Path, **kw: Any) -> WorkerContext:
    return WorkerContext(
        checkpoint_uri=f"file://{tmp_path}/ckpt",
        termination_log=str(tmp_path / "termination-log"),
        checkpoint_keep=0,
        **kw,
    )


def events(capsys: pytest.CaptureFixture[str], name: str) -> list[dict[str, Any]]:
    lines = capsys.readouterr().out.splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


def run(w: Counting, on_step: Any = None) -> ExitCode:
    try:
        return w.run(on_step)
    finally:
        w.close()


def test_interval_saves_land_on_the_interval_and_the_last_step_is_saved_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = Counting(context(tmp_path, checkpoint_interval=2), total=6)
    assert run(w) == ExitCode.SUCCEEDED
    assert w.finished
    assert [e["step"] for e in events(capsys, "checkpoint")] == [2, 4, 6]
    store = open_store(f"file://{tmp_path}/ckpt")
    assert checkpoint.complete_steps(store) == [2, 4, 6]
    assert checkpoint.read_manifest(store, 6)["trainer"] == {"step": 6, "marker": "counting"}


def test_without_an_interval_only_the_end_is_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(Counting(context(tmp_path), total=3)) == ExitCode.SUCCEEDED
    assert [e["step"] for e in events(capsys, "checkpoint")] == [3]


def test_a_finished_run_resumes_at_its_end_and_saves_nothing_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(Counting(context(tmp_path), total=3))
    capsys.readouterr()
    again = Counting(context(tmp_path, restart=1), total=3)
    assert again.step == 3
    assert run(again) == ExitCode.SUCCEEDED
    out = capsys.readouterr().out.splitlines()
    log = [json.loads(line) for line in out]
    assert [e["event"] for e in log] == ["resumed", "done"]
    assert log[0] == {
        "event": "resumed",
        "step": 3,
        "uri": f"file://{tmp_path}/ckpt/step-00000003",
        "restart": 1,
    }


def test_a_resume_reaches_the_checkpoint_gauge_and_the_end_reaches_the_final_word(
    tmp_path: Path,
) -> None:
    run(Counting(context(tmp_path), total=2))
    ckpt = f"file://{tmp_path}/ckpt"
    assert json.loads((tmp_path / "termination-log").read_text()) == {
        "progress": {"step": 2, "totalSteps": 2, "loss": 2.0},
        "checkpoint": {"step": 2, "uri": f"{ckpt}/step-00000002"},
    }
    (tmp_path / "termination-log").unlink()
    again = Counting(context(tmp_path), total=4)
    labels = {"job": "local", "namespace": "default", "rank": "0"}
    registry = again.telemetry.registry
    assert registry.get_sample_value(metric_names.CHECKPOINT_LAST_STEP, labels) == 2
    # No step of this attempt yet: the platform keeps the progress it last knew.
    assert registry.get_sample_value(metric_names.WORKER_STEP, labels) == 0
    assert run(again) == ExitCode.SUCCEEDED
    assert json.loads((tmp_path / "termination-log").read_text()) == {
        "progress": {"step": 4, "totalSteps": 4, "loss": 4.0},
        "checkpoint": {"step": 4, "uri": f"{ckpt}/step-00000004"},
    }


def test_only_global_rank_0_gives_the_final_word(tmp_path: Path) -> None:
    ctx = WorkerContext(termination_log=str(tmp_path / "termination-log"))
    assert run(Counting(ctx, total=2, rank=1)) == ExitCode.SUCCEEDED
    assert not (tmp_path / "termination-log").exists()
    assert run(Counting(ctx, total=2)) == ExitCode.SUCCEEDED
    assert json.loads((tmp_path / "termination-log").read_text()) == {
        "progress": {"step": 2, "totalSteps": 2, "loss": 2.0}
    }


def test_sigterm_saves_once_acknowledges_the_checkpoint_and_exits_75(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def on_step(rec: StepRecord, preempt: PreemptionFlag) -> None:
        if rec.step == 2:
            preempt.request()  # what the SIGTERM handler does

    # Step 2 is also an interval step: the preemption save finds it saved already.
    w = Counting(context(tmp_path, checkpoint_interval=2), total=10)
    assert run(w, on_step) == ExitCode.PREEMPTED
    assert not w.finished
    captured = capsys.readouterr().out.splitlines()
    log = [json.loads(line) for line in captured]
    assert [e["step"] for e in log if e["event"] == "checkpoint"] == [2]
    assert {"event": "preempted", "step": 2} in log
    assert "done" not in [e["event"] for e in log]
    ack = json.loads((tmp_path / "termination-log").read_text())
    assert ack == {
        "progress": {"step": 2, "totalSteps": 10, "loss": 2.0},
        "checkpoint": {"step": 2, "uri": f"file://{tmp_path}/ckpt/step-00000002"},
    }


def test_steps_are_logged_every_log_every_and_the_tokens_of_the_others_still_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records: list[StepRecord] = []
    w = Counting(context(tmp_path), total=5, log_every=2)
    labels = {"job": "local", "namespace": "default", "rank": "0"}
    try:
        assert w.run(lambda rec, preempt: records.append(rec)) == ExitCode.SUCCEEDED
        tokens = w.telemetry.registry.get_sample_value(metric_names.WORKER_TOKENS_TOTAL, labels)
    finally:
        w.close()
    steps = events(capsys, "step")
    assert [e["step"] for e in steps] == [2, 4, 5] == [r.step for r in records]
    assert steps[0]["loss"] == 2.0
    assert steps[0]["extra"] == 2
    assert steps[0]["lr"] == 0.1
    assert tokens == 5 * TOKENS


def test_mfu_is_unknown_without_a_peak_rather_than_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CARINA_PEAK_FLOPS", raising=False)
    w = Counting(context(tmp_path), total=1)
    labels = {"job": "local", "namespace": "default", "rank": "0"}
    try:
        w.run()
        gauge = w.telemetry.registry.get_sample_value(metric_names.WORKER_MFU, labels)
    finally:
        w.close()
    assert events(capsys, "step")[0]["mfu"] is None
    assert gauge is not None
    assert math.isnan(gauge)


def test_mfu_is_unknown_when_the_workload_cannot_count_its_flops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARINA_PEAK_FLOPS", "1e12")
    run(Counting(context(tmp_path), total=1, flops=None))
    assert events(capsys, "step")[0]["mfu"] is None


def test_mfu_is_the_steps_flops_per_second_over_the_peak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARINA_PEAK_FLOPS", "1e12")
    records: list[StepRecord] = []
    w = Counting(context(tmp_path), total=2)
    labels = {"job": "local", "namespace": "default", "rank": "0"}
    try:
        w.run(lambda rec, preempt: records.append(rec))
        gauge = w.telemetry.registry.get_sample_value(metric_names.WORKER_MFU, labels)
    finally:
        w.close()
    last = events(capsys, "step")[-1]
    expected = records[-1].tokens_per_second * (FLOPS / TOKENS) / 1e12
    assert gauge == pytest.approx(expected)
    assert last["mfu"] == round(expected, 4)


def test_run_workload_restores_the_sigterm_handler_and_closes_the_workload(
    tmp_path: Path,
) -> None:
    # That closing stops a served /metrics: tests/integration/processes/test_metrics_endpoint.py.
    class Closing(Counting):
        closed = False

        def close(self) -> None:
            self.closed = True
            super().close()

    built: list[Closing] = []
    before = signal.getsignal(signal.SIGTERM)

    def build(_d: Dist, preempt: PreemptionFlag) -> Closing:
        assert signal.getsignal(signal.SIGTERM) != before  # installed while it runs
        built.append(Closing(ctx, total=2, preempt=preempt))
        return built[0]

    ctx = context(tmp_path)
    assert run_workload(ctx, build) == ExitCode.SUCCEEDED
    assert signal.getsignal(signal.SIGTERM) == before
    assert built[0].finished
    assert built[0].closed


class Watched(Counting):
    """Records the step gauge as each step begins."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.gauge_seen: list[float | None] = []

    def train_step(self) -> StepReport:
        labels = {"job": "local", "namespace": "default", "rank": "0"}
        reg = self.telemetry.registry
        self.gauge_seen.append(reg.get_sample_value(metric_names.WORKER_STEP, labels))
        return super().train_step()


def test_the_step_gauge_moves_every_step_and_rank_0_exports_the_step_times(
    tmp_path: Path,
) -> None:
    w = Watched(context(tmp_path), total=12, log_every=5)
    try:
        w.run()
        reg = w.telemetry.registry
        labels = {"job": "local", "namespace": "default", "rank": "0"}
        step_seconds = reg.get_sample_value(metric_names.WORKER_STEP_SECONDS, labels)
        # Gathered at step 10: one series per rank (here the one).
        rank_seconds = reg.get_sample_value(metric_names.WORKER_RANK_STEP_SECONDS, labels)
    finally:
        w.close()
    # Not only at the logged steps 5 and 10: the platform judges a stall by the gauge's pace.
    assert w.gauge_seen[1:] == [float(s) for s in range(1, 12)]
    assert step_seconds is not None
    assert step_seconds > 0
    assert rank_seconds is not None
    assert rank_seconds > 0
