"""Kurtosis: its value on known distributions and the regularizer's hooks."""

from __future__ import annotations

import pytest
import torch
from quantize_builders import tiny_model, token_batch

from carina.workloads.models.kurtosis import (
    ActivationStats,
    OutputKurtosis,
    channel_absmax,
    kurtosis,
    max_median_ratio,
)
from carina.workloads.models.quant_layers import attach_quantizers, quantizable_linears

torch.set_num_threads(1)


def test_kurtosis_of_a_large_gaussian_sample_is_near_3() -> None:
    x = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0))
    assert kurtosis(x).item() == pytest.approx(3.0, abs=0.03)


def test_kurtosis_of_a_uniform_sample_is_near_1_8() -> None:
    x = torch.rand(1_000_000, generator=torch.Generator().manual_seed(0))
    assert kurtosis(x).item() == pytest.approx(1.8, abs=0.02)


def test_an_outlier_channel_raises_kurtosis_and_the_max_median_ratio() -> None:
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
    spiky = x.clone()
    spiky[:, 5] *= 30.0
    assert kurtosis(spiky).mean() > 10 * kurtosis(x).mean()
    assert max_median_ratio(channel_absmax(spiky)) > 10 * max_median_ratio(channel_absmax(x))


def test_regularizer_comes_from_the_training_forward_itself() -> None:
    model = tiny_model()
    layers = quantizable_linears(model)
    calls = {"n": 0}
    model.register_forward_pre_hook(lambda m, a: calls.__setitem__("n", calls["n"] + 1))
    idx = token_batch()
    hooks = OutputKurtosis(layers)
    with hooks:
        _, ce = model(idx, idx)
    penalty = hooks.loss()
    assert calls["n"] == 1  # one forward gave both the loss and the penalty
    outputs: dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        layer.register_forward_hook(lambda m, i, o, n=name: outputs.__setitem__(n, o))
    model(idx)
    expected = torch.stack([kurtosis(o).mean() for o in outputs.values()]).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)
    assert ce is not None
    (ce + 0.1 * penalty).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "blocks" in n)


def test_descending_the_penalty_lowers_layer_output_kurtosis() -> None:
    model = tiny_model()
    attach_quantizers(model, 16)
    layers = quantizable_linears(model)
    hooks = OutputKurtosis(layers)
    idx = token_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    values = []
    for _ in range(15):
        with hooks:
            model(idx)
        loss = hooks.loss()
        values.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert values[-1] < values[0]


def test_activation_stats_record_every_layer_when_asked() -> None:
    model = tiny_model()
    stats = ActivationStats(quantizable_linears(model))
    with stats.recording():
        model(token_batch())
    model(token_batch(seed=2))  # outside the context: not recorded
    summary = stats.summary()
    assert set(summary) == set(quantizable_linears(model))
    assert all(len(s.input_kurtosis) == 1 for s in stats.stats.values())
    assert all(v["inputMaxMedianRatio"] >= 1.0 for v in summary.values())
