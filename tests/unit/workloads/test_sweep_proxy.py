"""One proxy trial: the µP model learns in a few steps, its schedule's warmup scales with the
trial, and the score is on the same held-out windows whatever the batch size."""

from __future__ import annotations

import math

from carina.workloads.config import SweepConfig
from carina.workloads.sweep.proxy import train_proxy, trial_schedule

CFG = SweepConfig.model_validate(
    {
        "model": {"preset": "tiny", "nLayers": 1},
        "data": {"source": "synthetic"},
        "seqLen": 32,
        "batchSizes": [4],
        "tokens": [4 * 32 * 15],
        "evalBatches": 2,
    }
)


def test_a_trial_learns_and_its_score_is_a_held_out_loss():
    untrained = math.log(260)  # uniform over the byte vocabulary
    loss = train_proxy(CFG, 4, 4 * 32 * 15, 1e-2)
    assert math.isfinite(loss)
    assert loss < untrained - 0.5
    assert train_proxy(CFG, 4, 4 * 32 * 15, 1e-2) == loss  # deterministic: same seed, same data


def test_the_warmup_is_a_share_of_each_trials_steps():
    assert trial_schedule(CFG, 100).warmup_steps == 5
    assert trial_schedule(CFG, 4).warmup_steps == 0
    assert trial_schedule(CFG, 100).kind == "wsd"
