"""Learning-rate schedules as pure functions of the step (and, for `power`, of tokens seen).

`learning_rate(step, ...)` is what the training loop calls; the others are the pieces, kept
public so tests and benchmarks can check the formulas directly. Steps count from 0; step s
trains on the (s+1)-th batch, so warmup reaches the peak at s = warmup_steps - 1.
"""

from __future__ import annotations

import math

from carina.workloads.config import DecayShape, ScheduleKind, ScheduleSpec


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

    Shen et al. 2024 (arXiv 2408.13359), eq. 7: β is the batch size in sequences, defaults
    a = 4, b = -0.51, η_max = 0.02. It depends on neither the step count nor the total token
    budget, which is what lets a run be extended without a new schedule. a and b were fitted
    with 4096-token sequences (the paper's Tables 2-4): at shorter sequences the same β means
    fewer tokens per step, and β·a·n^b is correspondingly higher than the paper's setting.
    """
    if tokens <= 0:
        return lr_max
    return min(lr_max, batch_size * a * tokens**b)


def exponential_decay(progress: float, floor_ratio: float, tau: float = 1.0) -> float:
    """Multiplier going from 1 at progress 0 to `floor_ratio` at 1 along e^(-x/τ).

    τ is a share of the decay phase. τ = 1 is the reference code's form (dolomite-engine's
    ExponentialScheduler, a·e^(-x/t) + b with t the whole decay, from 1 to the floor): 0.85,
    0.38 and 0.06 of the way at 10, 50 and 90% of the decay. Smaller τ front-loads the drop.
    """
    progress = min(max(progress, 0.0), 1.0)
    end = math.exp(-1.0 / tau)
    shape = (math.exp(-progress / tau) - end) / (1.0 - end)
    return floor_ratio + (1.0 - floor_ratio) * shape


def decay_multiplier(progress: float, spec: ScheduleSpec) -> float:
    """The final decay of wsd and power: 1 at progress 0, `min_lr_ratio` at 1, in its shape.

    The Power-scheduler paper decays exponentially to 0 for WSD and Power alike (Shen et al.
    2024, §5.1, after MiniCPM); linear (Hägele et al. 2024) and cosine are offered as well.
    """
    progress = min(max(progress, 0.0), 1.0)
    floor = spec.min_lr_ratio
    shape = DecayShape(spec.decay_shape)
    if shape == DecayShape.LINEAR:
        return 1.0 - (1.0 - floor) * progress
    if shape == DecayShape.COSINE:
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return exponential_decay(progress, floor, spec.decay_tau)


def learning_rate(
    step: int,
    spec: ScheduleSpec,
    peak_lr: float,
    total_steps: int,
    batch_size: int,
    seq_len: int,
    token_offset: int = 0,
) -> float:
    """The base learning rate at `step` (before µP's per-group scaling).

    constant: warmup then `peak_lr`. cosine: warmup then a half cosine to min_lr_ratio·peak.
    wsd: warmup, stable at peak, then the final decay (`decay_multiplier`, exponential by
    default) to the floor over the last decay_fraction of steps. power: warmup to
    η_power(N_warmup), η_power(n) in tokens seen, then the same final decay; `peak_lr` is
    ignored (η_max caps it). `token_offset` is the tokens trained before step 0 (a run
    continued from another's weights), so power's clock goes on where that run's stopped.
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
        return peak_lr * decay_multiplier((step + 1 - start) / decay_len, spec)
    # Power scheduler (eq. 8): the clock is tokens seen, n = offset + (step + 1)·batch·seq_len.
    tokens_per_step = batch_size * seq_len

    def main_phase(s: int) -> float:
        n = token_offset + (s + 1) * tokens_per_step
        return power_lr(n, batch_size, spec.power_a, spec.power_b, spec.power_lr_max)

    if step < spec.warmup_steps:
        return warm * main_phase(spec.warmup_steps - 1)
    if step < start:
        return main_phase(step)
    return main_phase(start - 1) * decay_multiplier((step + 1 - start) / decay_len, spec)
