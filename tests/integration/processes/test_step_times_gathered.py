"""A straggling rank in a real DDP gang (gloo): rank 0 exports every rank's compute time, and
only the slow rank's is long, though the gang waits for it and every rank's wall step is long.

Two spawned ranks run the shared run loop (`RunLoop`) on a small DDP model; rank 1 stalls
before each forward as a slow GPU or a slow input pipeline would.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from multirank import run_ranks
from torch import nn

from carina.workloads import metric_names as names
from carina.workloads.config import Parallelism
from carina.workloads.contract import WorkerContext
from carina.workloads.runtime import distributed
from carina.workloads.runtime.distributed import PreemptionFlag
from carina.workloads.runtime.loop import RunLoop, StepReport, Workload

SLOW_RANK = 1
PAUSE = 0.2  # seconds the slow rank loses before each forward
STEPS = 20


class Regression(Workload):
    """A DDP linear regression whose rank SLOW_RANK is slow."""

    def __init__(self, ctx: WorkerContext, d: distributed.Dist) -> None:
        self.d = d
        self.loop = RunLoop(self, ctx, d, PreemptionFlag(), STEPS, log_every=5)
        torch.manual_seed(0)
        self.raw = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
        self.model = distributed.wrap(self.raw, Parallelism.DDP, d)
        self.optimizer = torch.optim.SGD(self.raw.parameters(), lr=0.01)
        self.step = 0

    def train_step(self) -> StepReport:
        x = torch.randn(16, 32)
        if self.d.rank == SLOW_RANK:
            time.sleep(PAUSE)
        loss = self.model(x).pow(2).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return StepReport(loss.detach(), 0.01, 16, None)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])


def train(rank: int, world: int, out: str) -> dict[str, Any]:
    d = distributed.setup(rank, world, rank)
    ctx = WorkerContext(world_size=world, local_rank=rank, termination_log=f"{out}/term-{rank}")
    w = Regression(ctx, d)
    try:
        w.run()
        reg = w.telemetry.registry
        base = {"job": "local", "namespace": "default"}
        gathered = {
            r: reg.get_sample_value(names.WORKER_RANK_STEP_SECONDS, {**base, "rank": str(r)})
            for r in range(world)
        }
        return {
            "gathered": gathered,
            "wall": w.loop.step_times.wall_median(),
            "compute": w.loop.step_times.compute_median(),
        }
    finally:
        w.close()
        distributed.teardown()


def test_only_the_slow_rank_computes_slowly_though_every_rank_waits_for_it(
    tmp_path: Path,
) -> None:
    fast, slow = run_ranks(train, 2, torch.device("cpu"), str(tmp_path))
    # Every rank's step takes the slow rank's time: the fast one waits in the all-reduce.
    assert fast["wall"] >= PAUSE
    assert slow["wall"] >= PAUSE
    # What rank 0 exports tells them apart: the fast rank's compute ends at its gradients.
    gathered = fast["gathered"]
    assert gathered[SLOW_RANK] >= PAUSE
    assert gathered[0] < PAUSE / 2
    assert slow["gathered"] == {0: None, 1: None}  # only global rank 0 exports them
