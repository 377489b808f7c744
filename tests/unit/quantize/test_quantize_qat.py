"""QAT plumbing: quantizers on the right layers, calibration, a training step, precisions."""

from __future__ import annotations

import pytest
import torch
from quantize_builders import tiny_model, token_batch

from carina.workloads.config import OptimizerSpec
from carina.workloads.models.fake_quant import QuantLinear
from carina.workloads.models.kurtosis import OutputKurtosis
from carina.workloads.models.quant_layers import (
    attach_quantizers,
    calibrate_clip_values,
    quant_layers,
    set_precision,
)
from carina.workloads.quantize.qat import build_optimizer, qat_step

torch.set_num_threads(1)


def test_quantizers_go_on_block_linears_only_and_keep_the_model_function() -> None:
    model = tiny_model().eval()
    idx = token_batch()
    before = model(idx)[0]
    layers = attach_quantizers(model, 4)
    assert set(layers) == {
        f"blocks.{b}.{m}"
        for b in (0, 1)
        for m in ("attn.wq", "attn.wk", "attn.wv", "attn.wo", "mlp.w1", "mlp.w3", "mlp.w2")
    }
    assert not isinstance(model.lm_head, QuantLinear)
    assert attach_quantizers(model, 4) == layers  # idempotent
    set_precision(model, quantize_weights=False, quantize_activations=False)
    assert torch.equal(model(idx)[0], before)


def test_calibration_sets_clip_values_that_cover_most_of_each_input() -> None:
    model = tiny_model()
    attach_quantizers(model, 4)
    ranges = calibrate_clip_values(model, [token_batch()])
    for name, layer in quant_layers(model).items():
        lo, hi = ranges[name]
        assert lo < 0 < hi
        assert layer.act_quant.lower.item() == pytest.approx(lo)
        assert layer.act_quant.enabled  # restored after calibration


def test_a_qat_step_trains_weights_and_clip_values_with_their_own_rate() -> None:
    model = tiny_model()
    layers = attach_quantizers(model, 4)
    for layer in layers.values():
        layer.act_quant.set_range(-0.05, 0.05)  # clip almost everything: clip values must move
    opt = build_optimizer(model, OptimizerSpec(lr=1e-4), clip_lr=1e-2)
    assert {g["name"] for g in opt.param_groups} >= {"hidden", "clip"}
    before = {n: m.act_quant.upper.item() for n, m in layers.items()}
    w_before = layers["blocks.0.attn.wq"].weight.detach().clone()
    idx = token_batch()
    result = qat_step(model, opt, idx, idx, 0.01, 1.0, 1e-4, OutputKurtosis(layers))
    assert result.loss == pytest.approx(result.ce + 0.01 * result.kurtosis, rel=1e-4)
    moved = [layers[n].act_quant.upper.item() - before[n] for n in layers]
    # Adam's first step moves a parameter with a gradient by exactly ±lr: the clip rate.
    assert all(m == 0 or abs(m) == pytest.approx(1e-2, rel=0.05) for m in moved)
    assert sum(m != 0 for m in moved) > len(moved) // 2
    assert not torch.equal(layers["blocks.0.attn.wq"].weight, w_before)


def test_precisions_change_the_output_only_when_quantized() -> None:
    model = tiny_model().eval()
    attach_quantizers(model, 4)
    calibrate_clip_values(model, [token_batch()])
    idx = token_batch(seed=3)
    set_precision(model, quantize_weights=False, quantize_activations=False)
    fp = model(idx)[0]
    set_precision(model, quantize_weights=False, quantize_activations=True)
    a4 = model(idx)[0]
    assert not torch.equal(fp, a4)
    assert (a4 - fp).abs().mean() < fp.abs().mean()


def test_the_workload_registers_every_quantize_metric_name_on_the_worker_registry() -> None:
    from carina.workloads import metric_names as names
    from carina.workloads.quantize.metrics import QuantizeMetrics
    from carina.workloads.runtime.telemetry import Telemetry
    from carina.workloads.worker import WorkerContext

    telemetry = Telemetry("job", "ns", 0, total_steps=1)
    metrics = QuantizeMetrics(telemetry, WorkerContext(job="job", namespace="ns"))
    metrics.on_layers(
        {
            "blocks.0.attn.wq": {
                "inputKurtosis": 3.0,
                "outputKurtosis": 4.0,
                "inputMaxMedianRatio": 2.0,
                "outputMaxMedianRatio": 5.0,
            }
        }
    )
    metrics.on_perplexity({"w16a16": 9.0, "w4a4": 10.0})
    registered = {f.name for f in telemetry.registry.collect()}
    quantize = {n for n in names.ALL if n.startswith("carina_quantize_")}
    assert quantize
    assert quantize <= registered
    value = telemetry.registry.get_sample_value(
        names.QUANTIZE_ACTIVATION_KURTOSIS,
        {
            "job": "job",
            "namespace": "ns",
            "rank": "0",
            "layer": "blocks.0.attn.wq",
            "tensor": "output",
        },
    )
    assert value == 4.0
