"""A damaged newest checkpoint on the embedded platform: the job resumes from the one before.

Real tiny training through `carina up`. While the job runs its worker is killed and the
newest checkpoint truncated (a disk that lost the end of a file); the restarted worker
passes it over for the older intact one, the job succeeds, and its events say what happened.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from builders import make_job
from embedded_platform import (
    REAL_WORKER,
    CarinaUp,
    log_events,
    running,
    wait_for_phase,
    wait_for_step,
    worker_pids,
)

from carina.workloads.config import ModelSpec
from carina.workloads.models.transformer import Transformer, param_groups
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.storage import open_store

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NS = "default"
INTERVAL = 10
STEPS = 60


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[CarinaUp]:
    with running(tmp_path / "state", REAL_WORKER, env={"OMP_NUM_THREADS": "1"}) as up:
        yield up


def test_a_damaged_newest_checkpoint_is_passed_over_and_the_job_succeeds(
    platform: CarinaUp,
) -> None:
    client = platform.client()
    job = (
        make_job("damaged")
        .with_quick_pretrain(STEPS)
        # The backoff leaves time to damage the checkpoint before the restart reads it.
        .with_spec(
            checkpoint={"intervalSteps": INTERVAL, "keep": 3},
            failurePolicy={"backoffSeconds": 3},
        )
    )
    client.create(NS, job)
    wait_for_step(client, "damaged", 2 * INTERVAL + 1, 180)
    for pid in worker_pids(platform.state_dir, "damaged", rank=0):
        os.kill(pid, signal.SIGKILL)

    [root] = platform.state_dir.glob(f"jobs/{NS}/damaged-*/checkpoints")
    store = open_store(str(root))
    older, newest = checkpoint.complete_steps(store)[-2:]
    weights = root / checkpoint.step_dir(newest) / checkpoint.MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:1000])

    done = wait_for_phase(client, "damaged", ["Succeeded", "Failed"], 300)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["restarts"] == 1
    assert done["status"]["lastCheckpoint"]["step"] == STEPS

    warnings = [e for e in client.events(NS, "damaged") if e["reason"] == "CheckpointCorrupt"]
    assert len(warnings) == 1
    assert warnings[0]["type"] == "Warning"
    assert f"checkpoint at step {newest} is damaged" in warnings[0]["message"]
    assert "model.safetensors: size 1000 bytes" in warnings[0]["message"]

    log = client.logs(NS, "damaged", worker=0, tail=100_000)
    [skipped] = log_events(log, "checkpoint_skipped")
    assert skipped["step"] == newest
    assert skipped["file"] == checkpoint.MODEL_FILE
    assert log_events(log, "resumed")[-1]["step"] == older
    # The damaged step was trained again and saved over: every kept checkpoint is intact.
    model = Transformer(ModelSpec(preset="tiny").resolve())
    restored = checkpoint.restore_latest(store, model, torch.optim.AdamW(param_groups(model, 0.1)))
    assert restored is not None
    assert restored.ref.step == STEPS
    assert not restored.skipped
