"""Fake quantizers: round-trip error bounds and gradients against finite differences."""

from __future__ import annotations

import pytest
import torch

from carina.workloads.quantize.fake_quant import (
    ActivationQuantizer,
    QuantLinear,
    fake_quant_activation,
    mse_clip_range,
    quantize_weight_rtn,
)

torch.set_num_threads(1)


def clip_values(lower: float, upper: float) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(lower, requires_grad=True), torch.tensor(upper, requires_grad=True))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_activation_error_is_at_most_half_a_step_inside_the_range(bits: int) -> None:
    lower, upper = clip_values(-3.0, 4.0)
    x = torch.linspace(-3.0, 4.0, 10_001)
    y = fake_quant_activation(x, lower, upper, bits)
    step = 7.0 / (2**bits - 1)
    assert (y - x).abs().max() <= step / 2 + 1e-5
    assert y.unique().numel() <= 2**bits


def test_activation_outside_the_range_is_clipped_to_the_clip_values() -> None:
    lower, upper = clip_values(-3.0, 4.0)
    y = fake_quant_activation(torch.tensor([-100.0, -3.5, 4.5, 100.0]), lower, upper, 4)
    assert y.tolist() == pytest.approx([-3.0, -3.0, 4.0, 4.0], abs=1e-6)


@pytest.mark.parametrize("group_size", [0, 16, 24, 64, 1000])
@pytest.mark.parametrize("bits", [3, 4, 8])
def test_weight_error_is_at_most_half_a_scale_per_group(group_size: int, bits: int) -> None:
    w = torch.randn(16, 40, generator=torch.Generator().manual_seed(0)) * 0.3
    w[3, 7] = 5.0  # an outlier only widens its own group's grid
    qw = quantize_weight_rtn(w, bits, group_size)
    assert int(qw.codes.max()) <= 2**bits - 1
    err = (qw.dequantize() - w).abs()
    half_scale = 0.5 * qw.scales.float().repeat_interleave(qw.group_size, dim=1)[:, :40]
    assert torch.all(err <= half_scale * (1 + 1e-4) + 1e-7)


def test_groups_isolate_an_outlier_from_the_rest_of_the_row() -> None:
    w = torch.randn(8, 128, generator=torch.Generator().manual_seed(0)) * 0.1
    w[:, 0] = 4.0
    per_row = (quantize_weight_rtn(w, 4, 0).dequantize() - w)[:, 32:].abs().mean()
    grouped = (quantize_weight_rtn(w, 4, 32).dequantize() - w)[:, 32:].abs().mean()
    assert grouped < per_row / 5


def test_ste_passes_the_gradient_inside_the_range_and_blocks_it_outside() -> None:
    lower, upper = clip_values(-1.0, 1.0)
    x = torch.tensor([-2.0, -0.5, 0.0, 0.7, 3.0], requires_grad=True)
    fake_quant_activation(x, lower, upper, 4).sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_ste_gradient_is_the_mean_slope_of_the_staircase_over_many_steps() -> None:
    # Over a span of many quantization steps, the finite difference of the staircase itself
    # approaches 1: the slope the STE uses.
    lower, upper = clip_values(-3.0, 4.0)
    x = torch.linspace(-2.0, 2.0, 401)
    h = 1.0  # ≈ 2 steps of 0.467 at 4 bits
    fd = (
        fake_quant_activation(x + h, lower, upper, 4)
        - fake_quant_activation(x - h, lower, upper, 4)
    ) / (2 * h)
    assert fd.mean().item() == pytest.approx(1.0, abs=0.05)


def test_clip_value_gradients_equal_finite_differences_where_inputs_are_clipped() -> None:
    # Outside the range y equals the clip value exactly, so PACT's gradient is exact there.
    x = torch.tensor([-5.0, -4.0, 6.0, 7.0, 9.0])
    weights = torch.tensor([0.5, -1.0, 2.0, 0.3, -0.7])
    lower, upper = clip_values(-3.0, 4.0)
    (fake_quant_activation(x, lower, upper, 4) * weights).sum().backward()
    eps = 1e-3

    def loss(lo: float, hi: float) -> float:
        return float(
            (fake_quant_activation(x, torch.tensor(lo), torch.tensor(hi), 4) * weights).sum()
        )

    fd_upper = (loss(-3.0, 4.0 + eps) - loss(-3.0, 4.0 - eps)) / (2 * eps)
    fd_lower = (loss(-3.0 + eps, 4.0) - loss(-3.0 - eps, 4.0)) / (2 * eps)
    assert upper.grad is not None
    assert lower.grad is not None
    assert upper.grad.item() == pytest.approx(fd_upper, rel=1e-3)
    assert lower.grad.item() == pytest.approx(fd_lower, rel=1e-3)


def quantization_error(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    return (fake_quant_activation(x, lower, upper, 2) - x).pow(2).mean()


def test_clip_value_gradients_have_the_sign_of_finite_differences_when_clipping_dominates() -> None:
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(0))
    lower, upper = clip_values(-0.5, 0.5)  # too narrow for N(0, 1): widening lowers the error
    quantization_error(x, lower, upper).backward()
    eps = 0.05

    def err(lo: float, hi: float) -> float:
        return float(quantization_error(x, torch.tensor(lo), torch.tensor(hi)))

    fd_upper = (err(-0.5, 0.5 + eps) - err(-0.5, 0.5 - eps)) / (2 * eps)
    fd_lower = (err(-0.5 + eps, 0.5) - err(-0.5 - eps, 0.5)) / (2 * eps)
    assert upper.grad is not None
    assert lower.grad is not None
    assert fd_upper < 0
    assert upper.grad.item() < 0
    assert fd_lower > 0
    assert lower.grad.item() > 0


def test_clip_values_get_no_gradient_when_nothing_is_clipped() -> None:
    # Straight-through inside the range: the grid's resolution, which would favour a narrower
    # range, is not seen by the clip values (PACT); only clipped elements move them.
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    lower, upper = clip_values(-12.0, 12.0)
    quantization_error(x, lower, upper).backward()
    assert upper.grad is not None
    assert lower.grad is not None
    assert upper.grad.item() == 0.0
    assert lower.grad.item() == 0.0


def test_mse_clip_range_clips_a_lone_outlier() -> None:
    x = torch.randn(50_000, generator=torch.Generator().manual_seed(0))
    x[0] = 60.0
    lo, hi = mse_clip_range(x, 4)
    assert hi < 30.0
    assert lo < 0 < hi


def test_disabled_quantizer_is_the_identity() -> None:
    q = ActivationQuantizer(16)
    x = torch.randn(5)
    assert torch.equal(q(x), x)


def test_quant_linear_keeps_the_plain_layer_state_dict_keys() -> None:
    linear = torch.nn.Linear(8, 4, bias=False)
    q = QuantLinear.from_linear(linear, 4)
    assert q.weight is linear.weight
    assert set(q.state_dict()) == {"weight", "act_quant.lower", "act_quant.upper"}
