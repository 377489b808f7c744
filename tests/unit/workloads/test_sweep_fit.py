"""The sweep's arithmetic on data whose answer is known: the parabola in ln lr, the power-law
fit and its intervals, the Power-scheduler recommendation and the report built from a ledger."""

from __future__ import annotations

import math

import numpy as np
import pytest

from carina.workloads.config import SweepConfig
from carina.workloads.sweep.fit import best_lr, fit_power_law, power_settings, t_quantile_975
from carina.workloads.sweep.report import build_report, render_markdown
from carina.workloads.sweep.trials import Trial, grid, synthetic_loss


def test_parabola_finds_the_vertex_between_grid_points():
    lrs = [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]
    true = 3e-3  # between grid points
    losses = [2.0 + 0.3 * (math.log(lr) - math.log(true)) ** 2 for lr in lrs]
    found = best_lr(lrs, losses)
    assert found.grid_lr == 4e-3
    assert found.refined
    assert not found.at_edge
    assert found.lr == pytest.approx(true, rel=1e-9)
    assert found.loss == pytest.approx(2.0, abs=1e-12)


def test_order_of_the_grid_does_not_matter():
    lrs = [8e-3, 1e-3, 4e-3, 2e-3]
    losses = [(math.log(lr) - math.log(2.5e-3)) ** 2 for lr in lrs]
    assert best_lr(lrs, losses).lr == pytest.approx(2.5e-3, rel=1e-9)


def test_a_minimum_at_the_edge_is_flagged_not_extrapolated():
    found = best_lr([1e-3, 2e-3, 4e-3], [3.0, 2.5, 2.0])
    assert found.at_edge
    assert not found.refined
    assert found.lr == 4e-3


def test_a_diverged_trial_never_wins_and_stops_the_refinement_beside_it():
    found = best_lr([1e-3, 2e-3, 4e-3, 8e-3], [3.0, 2.6, 2.5, float("nan")])
    assert found.grid_lr == 4e-3
    assert not found.refined
    assert not found.at_edge
    with pytest.raises(ValueError, match="diverged"):
        best_lr([1e-3, 2e-3, 4e-3], [math.inf, math.nan, math.inf])


def test_power_law_fit_recovers_a_and_b_exactly_on_exact_data():
    tokens = [1e6, 4e6, 1.6e7, 6.4e7]
    batches = [8, 16, 8, 32]
    lrs = [b * 4.6 * t**-0.51 for b, t in zip(batches, tokens, strict=True)]
    fit = fit_power_law(batches, tokens, lrs)
    assert fit.a == pytest.approx(4.6, rel=1e-9)
    assert fit.b == pytest.approx(-0.51, abs=1e-12)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.b_ci is not None
    assert fit.b_ci[1] - fit.b_ci[0] == pytest.approx(0, abs=1e-9)


def test_interval_covers_the_truth_and_matches_the_textbook_width():
    rng = np.random.default_rng(0)
    tokens = np.geomspace(1e5, 1e8, 12)
    noise = rng.normal(0, 0.1, tokens.size)
    lrs = 4.0 * tokens**-0.5 * np.exp(noise)
    fit = fit_power_law([1] * tokens.size, tokens, lrs)
    assert fit.b_ci is not None
    assert fit.a_ci is not None
    assert fit.b_ci[0] < -0.5 < fit.b_ci[1]
    assert fit.a_ci[0] < 4.0 < fit.a_ci[1]
    x, y = np.log(tokens), np.log(lrs)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    se = math.sqrt((resid**2).sum() / (x.size - 2)) / math.sqrt(((x - x.mean()) ** 2).sum())
    assert fit.b == pytest.approx(slope)
    assert (fit.b_ci[1] - fit.b_ci[0]) / 2 == pytest.approx(2.228 * se, rel=1e-6)  # t(10)


def test_two_points_give_a_line_without_intervals_and_one_gives_none():
    fit = fit_power_law([1, 1], [1e6, 1e7], [1e-3, 3e-4])
    assert fit.a_ci is None
    assert fit.lr_interval(1, 1e8) is None
    with pytest.raises(ValueError, match="two or more distinct token counts"):
        fit_power_law([1, 2], [1e6, 1e6], [1e-3, 2e-3])


def test_t_quantiles_approach_the_normal():
    assert t_quantile_975(1) == 12.706
    assert t_quantile_975(30) > t_quantile_975(31) > t_quantile_975(1000) > 1.96


def test_recommendation_scales_a_to_the_target_sequence_length():
    fit = fit_power_law([1, 1, 1], [1e6, 1e7, 1e8], [4.6 * t**-0.51 for t in (1e6, 1e7, 1e8)])
    rec = power_settings(fit, [0.02, 0.01], 64, 10**10, 1024, 4096)
    assert rec["schedule"]["powerA"] == pytest.approx(4.6 * 64)
    assert rec["schedule"]["powerB"] == pytest.approx(-0.51)
    assert rec["schedule"]["powerLrMax"] == 0.02
    # 1024 sequences of 4096 tokens are 65,536 sequences of the sweep's 64.
    assert rec["lrAtTarget"] == pytest.approx(65_536 * 4.6 * 1e10**-0.51)
    assert rec["lrAtTargetCapped"] == min(rec["lrAtTarget"], 0.02)


def test_a_synthetic_sweep_report_recovers_the_configured_law():
    cfg = SweepConfig.model_validate(
        {
            "objective": "synthetic",
            "batchSizes": [4, 16],
            "tokens": [10**5, 10**6, 10**7],
            "lrs": list(np.geomspace(1e-3, 1.0, 13)),
            "synthetic": {"a": 3.0, "b": -0.45},
            "target": {"tokens": 10**9, "batchSize": 64},
        }
    )
    rows = [
        {**t.to_dict(), "loss": synthetic_loss(cfg, t), "seconds": 0.0, "node": "n"}
        for t in grid(cfg)
    ]
    report = build_report(cfg, rows, len(grid(cfg)))
    assert report["complete"]
    assert report["trialsFinished"] == 78
    assert len(report["groups"]) == 6
    assert all(g["refined"] for g in report["groups"])
    assert report["fit"]["b"] == pytest.approx(-0.45, abs=1e-9)
    assert report["fit"]["a"] == pytest.approx(3.0, rel=1e-9)
    assert report["recommendation"]["lrAtTarget"] == pytest.approx(64 * 3.0 * 1e9**-0.45)
    page = render_markdown(report)
    assert "| 16 | 1000000 |" in page
    assert "b = -0.45" in page


def test_a_partial_ledger_reports_incomplete_with_the_groups_it_has():
    cfg = SweepConfig(objective="synthetic", batch_sizes=[8], tokens=[10**5, 10**6])
    half = [t for t in grid(cfg) if t.tokens == 10**5]
    rows = [{**t.to_dict(), "loss": synthetic_loss(cfg, t)} for t in half]
    report = build_report(cfg, rows, len(grid(cfg)))
    assert not report["complete"]
    assert [g["tokens"] for g in report["groups"]] == [10**5]
    assert report["fit"] is None
    assert "no fit" in report["fitNote"]


def test_trial_keys_are_stable_and_round_trip():
    t = Trial(16, 131072, 0.004)
    assert t.key == "b16-t131072-lr0.004"
    assert Trial.from_dict(t.to_dict()) == t
