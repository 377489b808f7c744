"""Fake quantizers: round-trip error bounds and gradients against finite differences."""

from __future__ import annotations

import pytest
import torch

from carina.workloads.models.fake_quant import (
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


def test_a_range_much_too_wide_gets_clip_gradients_that_narrow_it() -> None:
    # Nothing is clipped, yet the rounding-error term sees the grid's coarse resolution: the
    # error falls as the range narrows, and the gradients point that way (PACT alone: zero).
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    lower, upper = clip_values(-12.0, 12.0)
    quantization_error(x, lower, upper).backward()
    eps = 0.5

    def err(lo: float, hi: float) -> float:
        return float(quantization_error(x, torch.tensor(lo), torch.tensor(hi)))

    assert upper.grad is not None
    assert lower.grad is not None
    assert err(-12.0, 12.0 + eps) > err(-12.0, 12.0 - eps)
    assert upper.grad.item() > 0
    assert err(-12.0 + eps, 12.0) < err(-12.0 - eps, 12.0)
    assert lower.grad.item() < 0


def away_from_rounding_boundaries(
    x: torch.Tensor, lower: float, upper: float, bits: int
) -> torch.Tensor:
    """The elements of x near neither a clip value nor a rounding tie of the grid."""
    u = (x.clamp(lower, upper) - lower) * (2**bits - 1) / (upper - lower)
    frac = u - u.floor()
    inside = (x > lower + 0.05) & (x < upper - 0.05)
    outside = (x < lower - 0.05) | (x > upper + 0.05)
    keep = outside | (inside & ((frac - 0.5).abs() > 0.1) & (frac > 0.1) & (frac < 0.9))
    return x[keep]


def test_clip_value_gradients_equal_finite_differences_of_the_straight_through_estimator() -> None:
    # The estimator: y = clamp(x, lower, upper) + e·(upper - lower)/n with the rounding error
    # e = round(u) - u held at its value (round's derivative taken as 1). Its finite
    # differences in the clip values are what the backward must return, inside and outside.
    bits, lo0, hi0 = 4, -1.5, 2.0
    n = 2**bits - 1
    g = torch.Generator().manual_seed(0)
    x = away_from_rounding_boundaries(torch.randn(4000, generator=g) * 1.2, lo0, hi0, bits)
    weights = torch.randn(x.numel(), generator=g)
    u = (x.clamp(lo0, hi0) - lo0) * n / (hi0 - lo0)
    e = torch.round(u) - u

    def estimator(lo: float, hi: float) -> float:
        xd, ed = x.double(), e.double()
        return float(((xd.clamp(lo, hi) + ed * (hi - lo) / n) * weights.double()).sum())

    lower, upper = clip_values(lo0, hi0)
    y = fake_quant_activation(x, lower, upper, bits)
    assert torch.allclose(y, x.clamp(lo0, hi0) + e * (hi0 - lo0) / n, atol=1e-5)
    (y * weights).sum().backward()
    eps = 1e-3
    fd_upper = (estimator(lo0, hi0 + eps) - estimator(lo0, hi0 - eps)) / (2 * eps)
    fd_lower = (estimator(lo0 + eps, hi0) - estimator(lo0 - eps, hi0)) / (2 * eps)
    assert upper.grad is not None
    assert lower.grad is not None
    assert upper.grad.item() == pytest.approx(fd_upper, rel=1e-3, abs=1e-3)
    assert lower.grad.item() == pytest.approx(fd_lower, rel=1e-3, abs=1e-3)


@pytest.mark.parametrize("direction", ["scale", "shift"])
def test_gradients_are_exact_derivatives_along_a_joint_scaling_or_shift(direction: str) -> None:
    # Scaling or shifting x and both clip values together moves no element across a rounding
    # boundary: y scales or shifts with them exactly. The backward's directional derivative,
    # x·dL/dx + lower·dL/dlower + upper·dL/dupper (scale) or their sum (shift), must match the
    # forward's finite difference; without the rounding-error term it misses Σ g·(y - x).
    bits, lo0, hi0 = 4, -1.5, 2.0
    g = torch.Generator().manual_seed(1)
    x0 = away_from_rounding_boundaries(torch.randn(4000, generator=g) * 1.2, lo0, hi0, bits)
    weights = torch.randn(x0.numel(), generator=g)
    x = x0.clone().requires_grad_(True)
    lower, upper = clip_values(lo0, hi0)
    (fake_quant_activation(x, lower, upper, bits) * weights).sum().backward()
    assert x.grad is not None
    assert lower.grad is not None
    assert upper.grad is not None
    if direction == "scale":
        dx, dlo, dhi = x0, lo0, hi0
    else:
        dx, dlo, dhi = torch.ones_like(x0), 1.0, 1.0
    analytic = float((x.grad * dx).sum()) + lower.grad.item() * dlo + upper.grad.item() * dhi

    def loss(t: float) -> float:
        y = fake_quant_activation(
            x0 + t * dx, torch.tensor(lo0 + t * dlo), torch.tensor(hi0 + t * dhi), bits
        )
        return float((y.double() * weights.double()).sum())

    eps = 1e-3
    fd = (loss(eps) - loss(-eps)) / (2 * eps)
    assert analytic == pytest.approx(fd, rel=1e-3, abs=1e-2)


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
