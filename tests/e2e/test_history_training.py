"""A real tiny training run on the embedded platform, deleted by its TTL, read back from
`carina history`: the loss curve and the held-out loss from rank 0's own log lines.

Sized for two CPU cores: the tiny preset, sequences of 64 tokens, 40 steps.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import make_job
from embedded_platform import REAL_WORKER, log_events, running, wait_for

from carina.platform.cli.client import ApiError, CarinaClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NS = "default"


def gone(client: CarinaClient, name: str) -> bool:
    try:
        client.get(NS, name)
    except ApiError as exc:
        return exc.status == 404
    return False


def test_a_trained_job_deleted_by_its_ttl_keeps_its_curves_in_history(tmp_path: Path) -> None:
    job = (
        make_job("tiny-ttl")
        .with_quick_pretrain(40)
        .with_pretrain(evalEvery=20, evalBatches=1)
        .with_spec(ttlSecondsAfterFinished=1)
    )
    with running(tmp_path / "state", REAL_WORKER) as up:
        client = up.client()
        uid = client.create(NS, dict(job))["metadata"]["uid"]
        wait_for(lambda: gone(client, "tiny-ttl"), 300, "tiny-ttl to train and be deleted")
        record = client.history_record(NS, uid)

    assert record["phase"] == "Succeeded"
    assert record["finalStep"] == 40
    loss = record["metrics"]["loss"]
    # Every step rank 0 logged, as it logged it.
    logged = {int(e["step"]): e["loss"] for e in log_events(record["logs"]["0"], "step")}
    assert [s for s, _ in loss][-len(logged) :] == sorted(logged)
    assert loss[-1][1] < loss[0][1]  # it learned something
    assert [s for s, _ in record["metrics"]["evalLoss"]] == [20, 40]
    assert record["metrics"]["tokensPerSecond"] > 0
    assert record["finalLoss"] == pytest.approx(loss[-1][1], rel=1e-3)
