"""The sweep's arithmetic: the best learning rate per (batch, tokens) and the power law.

Shen et al. 2024 (arXiv 2408.13359, §3) find that under WSD and µP the optimal learning rate
follows η_opt = β·a·T^b (β sequences per step, T tokens trained). Per (β, T) the grid's
argmin is refined with a parabola in ln η through it and its two neighbours; the fit is
ordinary least squares of ln(η_opt/β) = ln a + b·ln T, with Student-t confidence intervals.
Pure numpy: the report, the benchmarks and the tests share it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Two-sided 95% Student-t quantiles (t_0.975) for 1..30 degrees of freedom.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """t_0.975 with `df` degrees of freedom (Cornish-Fisher beyond the table)."""
    if df < 1:
        raise ValueError("degrees of freedom must be at least 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Optimum:
    """The best learning rate of one (batch, tokens) group."""

    lr: float  # refined (parabola vertex), or the grid's argmin when it cannot be refined
    loss: float  # the parabola's value at `lr`, or the grid's minimum
    grid_lr: float
    grid_loss: float
    refined: bool
    at_edge: bool  # the grid's minimum is its smallest or largest lr: the optimum may lie beyond


def best_lr(lrs: Sequence[float], losses: Sequence[float]) -> Optimum:
    """The grid's argmin, refined by the parabola through it and its neighbours in ln lr.

    A trial that diverged (NaN or infinite loss) never wins; a minimum at the grid's edge or
    next to a diverged trial is kept as it is and flagged.
    """
    if len(lrs) != len(losses) or not lrs:
        raise ValueError("lrs and losses must be non-empty and of equal length")
    order = np.argsort(np.asarray(lrs, dtype=float))
    grid = np.asarray(lrs, dtype=float)[order]
    x = np.log(grid)
    y = np.asarray(losses, dtype=float)[order]
    y = np.where(np.isfinite(y), y, np.inf)
    if not np.isfinite(y).any():
        raise ValueError("every trial of the group diverged")
    i = int(np.argmin(y))
    grid_lr, grid_loss = float(grid[i]), float(y[i])
    at_edge = i == 0 or i == len(x) - 1
    if at_edge or not (np.isfinite(y[i - 1]) and np.isfinite(y[i + 1])):
        return Optimum(grid_lr, grid_loss, grid_lr, grid_loss, False, at_edge)
    c2, c1, c0 = np.polyfit(x[i - 1 : i + 2], y[i - 1 : i + 2], 2)
    if c2 <= 0:  # flat (ties): no vertex to trust
        return Optimum(grid_lr, grid_loss, grid_lr, grid_loss, False, False)
    vertex = float(np.clip(-c1 / (2 * c2), x[i - 1], x[i + 1]))
    loss = float(c0 + c1 * vertex + c2 * vertex**2)
    return Optimum(float(math.exp(vertex)), loss, grid_lr, grid_loss, True, False)


@dataclass(frozen=True)
class PowerLawFit:
    """ln(η/β) = ln a + b·ln T, fitted on `n` optima, with 95% intervals."""

    a: float
    b: float
    a_ci: tuple[float, float] | None  # None with fewer than 3 points (no residual freedom)
    b_ci: tuple[float, float] | None
    r2: float
    n: int
    mean_log_t: float
    sxx: float
    residual_sd: float | None

    def lr(self, batch: float, tokens: float) -> float:
        """η_opt = β·a·T^b."""
        return batch * self.a * tokens**self.b

    def lr_interval(self, batch: float, tokens: float) -> tuple[float, float] | None:
        """95% interval of the fitted η_opt at (β, T) (the line's mean, not one new run)."""
        if self.residual_sd is None:
            return None
        x0 = math.log(tokens)
        se = self.residual_sd * math.sqrt(1 / self.n + (x0 - self.mean_log_t) ** 2 / self.sxx)
        half = t_quantile_975(self.n - 2) * se
        centre = math.log(self.a) + self.b * x0
        return (batch * math.exp(centre - half), batch * math.exp(centre + half))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["aCi"], out["bCi"] = out.pop("a_ci"), out.pop("b_ci")
        for key in ("mean_log_t", "sxx", "residual_sd"):
            out.pop(key)
        return out


def fit_power_law(
    batches: Sequence[float], tokens: Sequence[float], lrs: Sequence[float]
) -> PowerLawFit:
    """Least squares of ln(η/β) on ln T over the given optima (at least 2 distinct T)."""
    x = np.log(np.asarray(tokens, dtype=float))
    y = np.log(np.asarray(lrs, dtype=float) / np.asarray(batches, dtype=float))
    n = len(x)
    if n < 2 or np.ptp(x) == 0:
        raise ValueError("the fit needs optima at two or more distinct token counts")
    mean_x = float(x.mean())
    sxx = float(((x - mean_x) ** 2).sum())
    b = float(((x - mean_x) * (y - y.mean())).sum() / sxx)
    log_a = float(y.mean() - b * mean_x)
    resid = y - (log_a + b * x)
    sst = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / sst if sst > 0 else 1.0
    if n < 3:
        return PowerLawFit(math.exp(log_a), b, None, None, r2, n, mean_x, sxx, None)
    s = math.sqrt(float((resid**2).sum()) / (n - 2))
    t = t_quantile_975(n - 2)
    se_b = s / math.sqrt(sxx)
    se_log_a = s * math.sqrt(1 / n + mean_x**2 / sxx)
    return PowerLawFit(
        a=math.exp(log_a),
        b=b,
        a_ci=(math.exp(log_a - t * se_log_a), math.exp(log_a + t * se_log_a)),
        b_ci=(b - t * se_b, b + t * se_b),
        r2=r2,
        n=n,
        mean_log_t=mean_x,
        sxx=sxx,
        residual_sd=s,
    )


def power_settings(
    fit: PowerLawFit,
    optima_lrs: Sequence[float],
    sweep_seq_len: int,
    target_tokens: int,
    target_batch: int,
    target_seq_len: int,
) -> dict[str, Any]:
    """The Power scheduler's (a, b, lrMax) for a target run, from the fit.

    The fit's β counts sequences of the sweep's length; the target's a is scaled by
    target seqLen / sweep seqLen, so both give the same η for the same tokens per step.
    lrMax is the largest optimum the sweep measured: the law is extrapolated no higher than
    the learning rates that were seen to train best.
    """
    scale = target_seq_len / sweep_seq_len
    a = fit.a * scale
    lr = fit.lr(target_batch * scale, target_tokens)
    interval = fit.lr_interval(target_batch * scale, target_tokens)
    lr_max = float(max(optima_lrs))
    return {
        "schedule": {"kind": "power", "powerA": a, "powerB": fit.b, "powerLrMax": lr_max},
        "targetTokens": target_tokens,
        "targetBatchSize": target_batch,
        "targetSeqLen": target_seq_len,
        "lrAtTarget": lr,
        "lrAtTargetCi": list(interval) if interval else None,
        "lrAtTargetCapped": min(lr, lr_max),
    }
