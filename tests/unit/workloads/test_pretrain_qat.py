"""Pretraining options of the training techniques: W4A4 QAT with kurtosis, the token clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from workload_builders import tiny_config

from carina.workloads.config import ExitCode, ScheduleSpec
from carina.workloads.models.kurtosis import ActivationStats
from carina.workloads.models.quant_layers import quant_layers, set_precision
from carina.workloads.models.transformer import Transformer
from carina.workloads.pretrain.run import StepRecord, run_pretrain
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.distributed import PreemptionFlag
from carina.workloads.runtime.schedules import learning_rate
from carina.workloads.worker import WorkerContext

torch.set_num_threads(1)


def events(out: str, name: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, out.splitlines()) if e.get("event") == name]


def manifest(root: Path, step: int) -> dict[str, Any]:
    return json.loads((root / f"step-{step:08d}" / "manifest.json").read_text())


def test_qat_pretraining_fake_quantizes_from_step_0_and_keeps_the_clip_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_config(steps=6, qat={"activationBits": 4, "calibrationBatches": 1})
    ctx = WorkerContext(checkpoint_uri=f"file://{tmp_path}/run")
    assert run_pretrain(cfg, ctx) == ExitCode.SUCCEEDED
    out = capsys.readouterr().out
    assert len(events(out, "calibrated")) == 1
    steps = events(out, "step")
    assert len(steps) == 6
    assert all(e["kurtosis"] > 0 for e in steps)
    assert manifest(tmp_path / "run", 6)["architecture"]["activation_bits"] == 4
    model = checkpoint.load_pretrained(ctx.checkpoint_uri)
    layers = quant_layers(model)
    assert len(layers) == 2 * 7  # every block linear: wq, wk, wv, wo, w1, w3, w2
    for layer in layers.values():
        assert layer.act_quant.enabled
        lo, hi = layer.act_quant.lower.item(), layer.act_quant.upper.item()
        assert lo < 0 < hi < 100  # calibrated and learned, saved with the weights


def output_kurtosis(uri: str, x: torch.Tensor) -> float:
    """Mean output kurtosis of the quantized layers, activations in floating point."""
    model = checkpoint.load_pretrained(uri).eval()
    set_precision(model, quantize_weights=False, quantize_activations=False)
    stats = ActivationStats(quant_layers(model))
    with stats.recording(), torch.no_grad():
        model(x)
    summary = stats.summary()
    return sum(s["outputKurtosis"] for s in summary.values()) / len(summary)


def test_the_kurtosis_regularizer_lowers_the_output_kurtosis_it_penalizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(3))
    kurt = {}
    for lam in (0.0, 0.1):
        cfg = tiny_config(steps=30, qat={"kurtosisLambda": lam, "calibrationBatches": 1})
        uri = f"file://{tmp_path}/l{lam}"
        assert run_pretrain(cfg, WorkerContext(checkpoint_uri=uri)) == ExitCode.SUCCEEDED
        kurt[lam] = output_kurtosis(uri, x)
    capsys.readouterr()
    assert kurt[0.1] < 0.9 * kurt[0.0]


def test_a_run_from_init_continues_the_power_schedulers_token_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schedule = {"kind": "power", "warmupSteps": 2, "powerLrMax": 1.0}
    first = tiny_config(steps=10, schedule=schedule)
    root = tmp_path / "first"
    assert run_pretrain(first, WorkerContext(checkpoint_uri=f"file://{root}")) == 0
    seen = 10 * first.batch_size * first.seq_len
    assert manifest(root, 10)["trainer"]["tokensSeen"] == seen

    lrs: list[float] = []

    def on_step(rec: StepRecord, _preempt: PreemptionFlag) -> None:
        lrs.append(rec.lr)

    second = tiny_config(steps=10, schedule=schedule, init=f"file://{root}")
    ctx = WorkerContext(checkpoint_uri=f"file://{tmp_path}/second")
    assert run_pretrain(second, ctx, on_step) == ExitCode.SUCCEEDED
    assert events(capsys.readouterr().out, "initialized")[0]["tokenOffset"] == seen
    spec = ScheduleSpec.model_validate(schedule)
    expected = [
        learning_rate(s, spec, 3e-3, 10, second.batch_size, second.seq_len, seen) for s in range(10)
    ]
    assert lrs == pytest.approx(expected)
    fresh = [learning_rate(s, spec, 3e-3, 10, 8, 32) for s in range(10)]
    assert lrs[5] < fresh[5]  # not the restarted clock's larger rates
    assert manifest(tmp_path / "second", 10)["trainer"]["tokensSeen"] == 2 * seen


def test_an_explicit_token_offset_overrides_the_init_checkpoints(tmp_path: Path) -> None:
    first = tiny_config(steps=4)
    root = tmp_path / "first"
    assert run_pretrain(first, WorkerContext(checkpoint_uri=f"file://{root}")) == 0
    second = tiny_config(
        steps=4,
        init=f"file://{root}",
        schedule={"kind": "power", "warmupSteps": 1, "tokenOffset": 0},
    )
    assert run_pretrain(second, WorkerContext(checkpoint_uri=f"file://{tmp_path}/s")) == 0
    assert manifest(tmp_path / "s", 4)["trainer"]["tokensSeen"] == 4 * 8 * 32


def test_qat_from_a_qat_checkpoint_keeps_its_clip_values_and_from_a_plain_one_calibrates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    qat = {"calibrationBatches": 1}
    plain, quantized = tmp_path / "plain", tmp_path / "qat"
    assert run_pretrain(tiny_config(steps=4), WorkerContext(checkpoint_uri=f"file://{plain}")) == 0
    cfg = tiny_config(steps=4, qat=qat)
    assert run_pretrain(cfg, WorkerContext(checkpoint_uri=f"file://{quantized}")) == 0
    capsys.readouterr()
    for init, calibrates in ((plain, True), (quantized, False)):
        cfg = tiny_config(steps=4, qat=qat, init=f"file://{init}")
        uri = f"file://{tmp_path}/from-{init.name}"
        assert run_pretrain(cfg, WorkerContext(checkpoint_uri=uri)) == ExitCode.SUCCEEDED
        assert bool(events(capsys.readouterr().out, "calibrated")) == calibrates
    # And a QAT checkpoint's weights load into a plain model (its clip values left aside).
    with_clips = checkpoint.load_pretrained(f"file://{quantized}")
    model = Transformer(cfg.model.resolve())
    checkpoint.load_uri(f"file://{quantized}", model)
    assert not quant_layers(model)
    for name, p in model.state_dict().items():
        assert torch.equal(p, with_clips.state_dict()[name]), name
