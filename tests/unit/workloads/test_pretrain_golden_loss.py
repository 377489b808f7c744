"""The `tiny` preset's loss curve against a stored golden curve.

Regenerate (only when a change is meant to move the curve, and say why in the commit):

    .venv/bin/python tests/unit/workloads/test_pretrain_golden_loss.py --regenerate

The run is single-process on CPU with one thread and deterministic algorithms, so a machine
with the same torch reproduces it to rounding; the tolerance absorbs other CPUs' kernels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from carina.workloads.config import PretrainConfig
from carina.workloads.pretrain.run import StepRecord, run_pretrain
from carina.workloads.runtime.distributed import PreemptionFlag
from carina.workloads.worker import WorkerContext

GOLDEN = Path(__file__).parent / "golden" / "tiny_loss.json"
CONFIG = {
    "model": {"preset": "tiny"},
    "data": {"source": "synthetic", "valFraction": 0.05},
    "steps": 30,
    "batchSize": 8,
    "microBatchSize": 8,
    "seqLen": 64,
    "evalEvery": 0,
    "schedule": {"kind": "wsd", "warmupSteps": 5, "decayFraction": 0.2},
    "optimizer": {"lr": 0.003},
    "seed": 1234,
}
ABS_TOL, REL_TOL = 0.02, 0.01


def loss_curve() -> list[float]:
    """Per-step training loss of the golden run."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    losses: list[float] = []

    def on_step(rec: StepRecord, _preempt: PreemptionFlag) -> None:
        losses.append(rec.loss)

    try:
        run_pretrain(PretrainConfig.model_validate(CONFIG), WorkerContext(), on_step)
    finally:
        torch.use_deterministic_algorithms(False)
    return losses


def test_tiny_loss_curve_matches_the_golden_curve() -> None:
    golden = json.loads(GOLDEN.read_text())
    assert golden["config"] == CONFIG, "the golden run's config changed: regenerate it"
    losses = loss_curve()
    assert len(losses) == len(golden["loss"])
    for step, (got, want) in enumerate(zip(losses, golden["loss"], strict=True), start=1):
        assert abs(got - want) <= ABS_TOL + REL_TOL * want, (step, got, want)
    assert losses[-1] < 0.5 * losses[0]  # and it is a curve that learns


def test_a_run_leaves_the_process_with_ieee_denormals() -> None:
    # The run flushes denormals to zero on the CPU for speed; a process that goes on (a test
    # session, a benchmark) must get them back, or float code after it changes behaviour.
    loss_curve()
    assert torch.tensor([1e-310], dtype=torch.float64).mul(1.0).item() > 0.0


if __name__ == "__main__" and "--regenerate" in sys.argv:
    curve = loss_curve()
    GOLDEN.write_text(
        json.dumps(
            {
                "config": CONFIG,
                "torch": torch.__version__,
                "command": "python tests/unit/workloads/test_pretrain_golden_loss.py --regenerate",
                "loss": [round(x, 6) for x in curve],
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {GOLDEN}: {curve[0]:.4f} -> {curve[-1]:.4f}")
