"""Learning-rate schedules, the Power scheduler above all (Shen et al. 2024)."""

from __future__ import annotations

import pytest

from carina.workloads.config import ScheduleSpec
from carina.workloads.runtime.schedules import exponential_decay, learning_rate, power_lr

SEQ = 128


def power(**kw: object) -> ScheduleSpec:
    return ScheduleSpec(kind="power", warmup_steps=10, decay_fraction=0.1, **kw)


def lr(spec: ScheduleSpec, step: int, total: int, batch: int = 8, peak: float = 1e-3) -> float:
    return learning_rate(step, spec, peak, total, batch, SEQ)


def test_power_main_phase_does_not_depend_on_the_total_token_budget() -> None:
    spec = power()
    for step in (10, 50, 200, 899):
        assert lr(spec, step, total=1_000) == lr(spec, step, total=100_000)


def test_power_lr_doubles_with_batch_size_until_the_cap() -> None:
    tokens = 1e6
    small = power_lr(tokens, 4, a=4.0, b=-0.51, lr_max=1.0)
    assert power_lr(tokens, 8, a=4.0, b=-0.51, lr_max=1.0) == pytest.approx(2 * small)
    # With the paper's cap η_max = 0.02, doubling stops where β·a·n^b would exceed it.
    capped = [power_lr(tokens, beta, 4.0, -0.51, 0.02) for beta in (1, 2, 4, 8, 16, 32)]
    assert capped[1] == pytest.approx(2 * capped[0])
    assert capped[-1] == 0.02
    assert capped[-2] == 0.02


def test_power_lr_follows_the_power_law_in_tokens() -> None:
    # η(n) ∝ n^b: multiplying tokens by 10 multiplies the LR by 10^-0.51.
    a = power_lr(1e7, 1, 4.0, -0.51, 1.0)
    assert power_lr(1e8, 1, 4.0, -0.51, 1.0) / a == pytest.approx(10**-0.51)


def test_power_schedule_warms_up_linearly_then_decays_exponentially_to_the_floor() -> None:
    spec, total = power(), 1000
    warm = [lr(spec, s, total) for s in range(10)]
    assert warm == pytest.approx([(s + 1) / 10 * warm[-1] for s in range(10)])
    assert lr(spec, 899, total) > lr(spec, 950, total) > lr(spec, 999, total)
    assert lr(spec, 999, total) == pytest.approx(0.0, abs=1e-12)
    assert exponential_decay(0.0, 0.1) == 1.0
    assert exponential_decay(1.0, 0.1) == 0.1


def test_wsd_is_flat_between_warmup_and_the_final_decay() -> None:
    spec = ScheduleSpec(kind="wsd", warmup_steps=10, decay_fraction=0.2, min_lr_ratio=0.1)
    assert lr(spec, 0, 100) == pytest.approx(1e-4)
    assert {lr(spec, s, 100) for s in range(10, 80)} == {1e-3}
    assert lr(spec, 99, 100) == pytest.approx(1e-4)


def test_cosine_ends_at_the_floor_and_constant_stays_at_peak() -> None:
    cosine = ScheduleSpec(kind="cosine", warmup_steps=0, min_lr_ratio=0.1)
    assert lr(cosine, 0, 100) == pytest.approx(1e-3)
    assert lr(cosine, 100, 100) == pytest.approx(1e-4)
    constant = ScheduleSpec(kind="constant", warmup_steps=0)
    assert lr(constant, 57, 100) == 1e-3
