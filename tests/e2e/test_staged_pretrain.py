"""A staged long-context run through the embedded platform: a worker killed in stage 2.

Two stages on the tiny preset: 60 steps of 32-token windows, then 140 of 64-token windows with
RoPE θ raised 4x on a mixture of two sources. A rank is killed once status shows stage 2; the
restarted workers must resume inside stage 2 at the checkpoint's step, with stage 2's length
and θ, and finish it.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import JobBuilder, make_job
from embedded_platform import (
    REAL_WORKER,
    CarinaUp,
    log_events,
    running,
    wait_for,
    wait_for_phase,
    worker_pids,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NS = "default"
INTERVAL = 25
SHORT_STEPS, LONG_STEPS = 60, 140


def staged_job(name: str) -> JobBuilder:
    return (
        make_job(name)
        .with_replicas(2)
        .with_pretrain(
            model={"preset": "tiny", "maxSeqLen": 128},
            sources={
                "code": {"source": "python-stdlib", "packing": "repository", "maxBytes": 400_000},
                "keys": {"source": "passkey"},
            },
            stages=[
                {"name": "short", "steps": SHORT_STEPS, "seqLen": 32, "mixture": {"code": 1}},
                {
                    "name": "long",
                    "steps": LONG_STEPS,
                    "seqLen": 64,
                    "ropeTheta": 40000.0,
                    "mixture": {"code": 3, "keys": 1},
                    "schedule": {"kind": "cosine", "warmupSteps": 5},
                },
            ],
            steps=SHORT_STEPS + LONG_STEPS,
            batchSize=8,
            microBatchSize=8,
            evalEvery=0,
            schedule={"warmupSteps": 5},
        )
        .with_spec(
            checkpoint={"intervalSteps": INTERVAL, "keep": 1}, failurePolicy={"backoffSeconds": 0}
        )
    )


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[CarinaUp]:
    with running(tmp_path / "state", REAL_WORKER) as up:
        yield up


def test_a_worker_killed_in_stage_two_resumes_stage_two_at_its_step(platform: CarinaUp) -> None:
    client = platform.client()
    client.create(NS, staged_job("staged"))

    def in_stage_two_past_a_save() -> dict[str, Any] | None:
        progress = (client.get(NS, "staged").get("status") or {}).get("progress") or {}
        past = progress.get("step", 0) >= SHORT_STEPS + INTERVAL + 5
        return progress if past and progress.get("stage") == "long" else None

    progress = wait_for(in_stage_two_past_a_save, 300, "staged to train in stage 2")
    assert (progress["stageIndex"], progress["stageCount"]) == (2, 2)
    for pid in worker_pids(platform.state_dir, "staged", rank=1):
        os.kill(pid, signal.SIGKILL)

    job = wait_for_phase(client, "staged", ["Succeeded", "Failed"], 400)
    assert job["status"]["phase"] == "Succeeded", job["status"]
    assert job["status"]["restarts"] == 1
    assert job["status"]["progress"]["stage"] == "long"
    log = client.logs(NS, "staged", worker=0, tail=100_000)
    [resumed] = log_events(log, "resumed")
    assert resumed["step"] > SHORT_STEPS  # from a checkpoint inside stage 2
    starts = log_events(log, "start")
    assert len(starts) == 2
    again = starts[1]
    assert again["step"] == resumed["step"]
    assert (again["stage"], again["stageIndex"]) == ("long", 1)
    assert again["stageStep"] == resumed["step"] - SHORT_STEPS
    assert (again["seqLen"], again["ropeTheta"]) == (64, 40000.0)
    steps = log_events(log, "step")
    seen = Counter(int(e["step"]) for e in steps)
    assert set(seen) == set(range(1, SHORT_STEPS + LONG_STEPS + 1))
    # Stage 1 was trained once; every step after it, before and after the kill, in stage 2.
    assert [e["stage"] for e in steps].count("short") == SHORT_STEPS
    assert all(e["stage"] == "long" for e in steps if e["step"] > SHORT_STEPS)
