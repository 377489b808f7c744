"""Learning-rate schedules, the Power scheduler above all (Shen et al. 2024)."""

from __future__ import annotations

import itertools
import math

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


def test_wsd_decays_exponentially_by_default_as_in_the_power_paper() -> None:
    # 100 steps, warmup 10, decay over the last 20 (steps 80-99), τ = the whole decay phase.
    spec = ScheduleSpec(kind="wsd", warmup_steps=10, decay_fraction=0.2)
    assert spec.decay_shape == "exponential"
    assert lr(spec, 9, 100) == pytest.approx(1e-3)  # end of warmup: the peak
    assert lr(spec, 79, 100) == 1e-3  # last stable step
    end = math.exp(-1.0)
    for step in (80, 89, 97):
        progress = (step + 1 - 80) / 20
        expected = (math.exp(-progress) - end) / (1 - end)
        assert lr(spec, step, 100) == pytest.approx(1e-3 * expected)
    assert lr(spec, 89, 100) == pytest.approx(0.377e-3, abs=1e-6)  # halfway: 0.38, not 0.5
    assert lr(spec, 99, 100) == pytest.approx(0.0, abs=1e-15)  # the floor at the last step


@pytest.mark.parametrize(
    ("shape", "halfway"),
    [
        ("linear", 0.5),
        ("cosine", 0.5),
        ("exponential", (math.exp(-0.5) - math.exp(-1)) / (1 - math.exp(-1))),
    ],
)
def test_decay_shapes_meet_the_peak_and_the_floor_at_the_phase_boundaries(
    shape: str, halfway: float
) -> None:
    spec = ScheduleSpec(
        kind="wsd", warmup_steps=0, decay_fraction=0.5, min_lr_ratio=0.1, decay_shape=shape
    )
    # 40 steps: the decay is steps 20-39; step 19 is the last at the peak, 29 is halfway.
    assert lr(spec, 19, 40) == 1e-3
    assert lr(spec, 29, 40) == pytest.approx(1e-3 * (0.1 + 0.9 * halfway))
    assert lr(spec, 39, 40) == pytest.approx(1e-4)
    decay = [lr(spec, s, 40) for s in range(19, 40)]
    assert all(a > b for a, b in itertools.pairwise(decay))


def test_power_decay_shape_and_time_constant_are_settings() -> None:
    base = lr(power(), 899, 1000)  # the last step before the decay
    linear = power(decay_shape="linear")
    assert lr(linear, 949, 1000) == pytest.approx(base * 0.5)
    steep = power(decay_tau=0.2)
    assert lr(steep, 949, 1000) == pytest.approx(base * exponential_decay(0.5, 0.0, 0.2))
    assert lr(steep, 949, 1000) < lr(power(), 949, 1000)


def test_power_clock_goes_on_from_the_token_offset() -> None:
    # A run continued from a checkpoint that saw N tokens continues η_power(n) from N.
    spec, batch = power(power_lr_max=1.0), 8  # uncapped, so the main phase shows
    per_step = batch * SEQ
    first = [lr(spec, s, 10_000, batch) for s in range(200, 300)]
    offset = 200 * per_step
    continued = [
        learning_rate(s, spec, 1e-3, 10_000, batch, SEQ, token_offset=offset) for s in range(100)
    ]
    assert continued[10:] == pytest.approx(first[10:])  # after the continuation's warmup
    assert lr(spec, 50, 10_000, batch) > continued[50]
