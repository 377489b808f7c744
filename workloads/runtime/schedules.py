"""Learning-rate schedules as pure functions of the step (and, for `power`, of tokens seen).

`learning_rate(step, ...)` is what the training loop calls; the others are the pieces, kept
public so tests and benchmarks can check the formulas directly. Steps count from 0; step s
trains on the (s+1)-th batch, so warmup reaches the peak at s = warmup_steps - 1.
"""

from __future__ import annotations

import math

from carina.workloads.config import ScheduleKind, ScheduleSpec

# Time constant of the Power scheduler's final exponential decay, as a share of the decay
# phase: e^(-1/0.2) ≈ 0.7% remains before the final shift to exactly the floor.
POWER_DECAY_TAU = 0.2


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warmup from 1/warmup to 1 over the first `warmup_steps` steps."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return (step + 1) / warmup_steps


def decay_start(total_steps: int, decay_fraction: float) -> int:
    """First step of the final decay phase (WSD and power)."""
    return total_steps - max(0, round(decay_fraction * total_steps))


def power_lr(tokens: float, batch_size: int, a: float, b: float, lr_max: float) -> float:
    """The Power scheduler's main phase: η = min(η_max, β·a·n^b), n = tokens seen.

    Shen et al. 2024 (arXiv 2408.13359), eq. for η_power: β is the batch size in sequences,
    defaults a = 4, b = -0.51, η_max = 0.02. It depends on neither the step count nor the total
    token budget, which is what lets a run be extended without a new schedule.
    """
    if tokens <= 0:
        return lr_max
    return min(lr_max, batch_size * a * tokens**b)


def exponential_decay(progress: float, floor_ratio: float, tau: float = POWER_DECAY_TAU) -> float:
    """Multiplier going from 1 at progress 0 to `floor_ratio` at 1 along e^(-x/τ)."""
    progress = min(max(progress, 0.0), 1.0)
    end = math.exp(-1.0 / tau)
    shape = (math.exp(-progress / tau) - end) / (1.0 - end)
    return floor_ratio + (1.0 - floor_ratio) * shape


def learning_rate(
    step: int,
    spec: ScheduleSpec,
    peak_lr: float,
    total_steps: int,
    batch_size: int,
    seq_len: int,
) -> float:
    """The base learning rate at `step` (before µP's per-group scaling).

    constant: warmup then `peak_lr`. cosine: warmup then a half cosine to min_lr_ratio·peak.
    wsd: warmup, stable at peak, then linear decay to the floor over the last decay_fraction
    of steps. power: warmup to η_power(N_warmup), η_power(n) in tokens seen, then exponential
    decay over the last decay_fraction of steps; `peak_lr` is ignored (η_max caps it).
    """
    kind = ScheduleKind(spec.kind)
    floor = spec.min_lr_ratio
    warm = warmup_factor(step, spec.warmup_steps)
    if kind == ScheduleKind.CONSTANT:
        return peak_lr * warm
    if kind == ScheduleKind.COSINE:
        if step < spec.warmup_steps:
            return peak_lr * warm
        span = max(1, total_steps - spec.warmup_steps)
        progress = min(1.0, (step - spec.warmup_steps) / span)
        return peak_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    start = decay_start(total_steps, spec.decay_fraction)
    decay_len = max(1, total_steps - start)
    if kind == ScheduleKind.WSD:
        if step < spec.warmup_steps:
            return peak_lr * warm
        if step < start:
            return peak_lr
        progress = (step + 1 - start) / decay_len
        return peak_lr * (1 - (1 - floor) * progress)
    # Power scheduler: the clock is tokens seen, n = (step + 1)·batch·seq_len.
    tokens_per_step = batch_size * seq_len

    def main_phase(s: int) -> float:
        return power_lr(
            (s + 1) * tokens_per_step, batch_size, spec.power_a, spec.power_b, spec.power_lr_max
        )

    if step < spec.warmup_steps:
        return warm * main_phase(spec.warmup_steps - 1)
    if step < start:
        return main_phase(step)
    return main_phase(start - 1) * exponential_decay((step + 1 - start) / decay_len, floor)
