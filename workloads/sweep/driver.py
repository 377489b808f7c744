"""The sweep's driver on the head: Ray Tune over the trials the ledger lacks.

A plain grid, no early stopping: the paper's score is the loss after the final decay, which
intermediate losses of runs of different lengths do not predict (ASHA would compare them).
Every trial reports once, at its end; the driver records it in the ledger at once, so a
restarted job reruns only trials that had not finished.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune

from carina.workloads.config import SweepConfig, SweepObjective
from carina.workloads.sweep.trials import Ledger, Trial, synthetic_loss


def run_trial(config: dict[str, Any]) -> None:
    """One Tune trial (runs in a Ray worker process, on any node)."""
    cfg = SweepConfig.model_validate(config["sweep"])
    trial = Trial.from_dict(config["trial"])
    started = time.monotonic()
    if cfg.objective == SweepObjective.SYNTHETIC:
        loss = synthetic_loss(cfg, trial)
    else:
        import torch

        from carina.workloads.sweep.proxy import train_proxy

        torch.set_num_threads(max(1, int(cfg.trial_cpus)))
        loss = train_proxy(cfg, trial.batch_size, trial.tokens, trial.lr)
    tune.report(
        {
            "loss": loss if math.isfinite(loss) else float("inf"),
            "trial_seconds": time.monotonic() - started,
            "node": ray.get_runtime_context().get_node_id(),
        }
    )


# The driver's ledger and progress hook, by sweep name: Tune pickles its callbacks with the
# experiment's state, and a ledger holds a store and a lock that do not pickle.
_SINKS: dict[str, tuple[Ledger, Callable[[], None]]] = {}


class LedgerCallback(tune.Callback):
    """Writes each trial's start and result to the ledger as the driver learns of them."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _record(self, trial: Any, loss: float, seconds: float, node: str) -> None:
        ledger, on_result = _SINKS[self.name]
        ledger.record_result(Trial.from_dict(trial.config["trial"]), loss, seconds, node)
        on_result()

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:  # noqa: ARG002 (Tune's signature)
        _SINKS[self.name][0].record_start(Trial.from_dict(trial.config["trial"]))

    def on_trial_result(
        self,
        iteration: int,  # noqa: ARG002 (Tune's signature)
        trials: list[Any],  # noqa: ARG002
        trial: Any,
        result: dict[str, Any],
        **info: Any,  # noqa: ARG002
    ) -> None:
        loss = float(result.get("loss", math.inf))
        seconds = float(result.get("trial_seconds", 0.0))
        self._record(trial, loss, seconds, str(result.get("node", "")))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:  # noqa: ARG002 (Tune's signature)
        # Tune's retries (maxFailures) are spent: the point counts as diverged, not as missing.
        self._record(trial, math.inf, 0.0, "")


def run_tune(
    cfg: SweepConfig,
    todo: list[Trial],
    ledger: Ledger,
    storage: Path,
    name: str,
    on_result: Callable[[], None],
) -> None:
    """Run `todo` on the connected Ray cluster; results land in `ledger` as they come."""
    _SINKS[name] = (ledger, on_result)
    trainable = tune.with_resources(run_trial, {"cpu": cfg.trial_cpus, "gpu": cfg.trial_gpus})
    tuner = tune.Tuner(
        trainable,
        param_space={
            "sweep": cfg.model_dump(mode="json", by_alias=True),
            "trial": tune.grid_search([t.to_dict() for t in todo]),
        },
        tune_config=tune.TuneConfig(
            max_concurrent_trials=cfg.max_concurrent_trials, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage),
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            callbacks=[LedgerCallback(name)],
            verbose=0,
        ),
    )
    try:
        tuner.fit()
    finally:
        del _SINKS[name]
