"""Hangs and stragglers on the embedded platform: a real `carina up`, real stand-in workers.

A worker that stops stepping (SIGSTOP, or a frozen progress feed that still answers) gets the
job a Stalled condition with the evidence and a restart from its checkpoint, counted as an
application restart, after which it runs on to the end; a rank that computes slowly is named
in status.stragglers (by rank and worker; every worker's node is this machine, `localhost`)
with a Straggler event.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import make_job
from embedded_platform import (
    STANDIN_WORKER,
    CarinaUp,
    running,
    wait_for,
    wait_for_phase,
    wait_for_step,
    worker_pids,
)

from carina.platform.cli.client import CarinaClient

NS = "default"
# Stalled once no step came for max(3 x the median step time, 2 s).
FAST_STALL = {"factor": 3, "minSeconds": 2, "startupSeconds": 120}


def standin_job(name: str, steps: int, replicas: int = 1, **policy: Any):
    return (
        make_job(name)
        .with_replicas(replicas)
        .with_pretrain(steps=steps)
        .with_spec(
            checkpoint={"intervalSteps": 10},
            failurePolicy={"backoffSeconds": 0, "stall": FAST_STALL, **policy},
        )
    )


def condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conditions = (job.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


def stalled(client: CarinaClient, name: str) -> dict[str, Any] | None:
    cond = condition(client.get(NS, name), "Stalled")
    return cond if cond is not None and cond["status"] == "True" else None


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[CarinaUp]:
    with running(
        tmp_path / "state",
        STANDIN_WORKER,
        env={"STANDIN_STEP_SECONDS": "0.05", "CARINA_CAPACITY_CPUS": "4"},
    ) as up:
        yield up


def test_a_worker_that_stops_stepping_is_stalled_restarted_and_runs_on(platform: CarinaUp):
    client = platform.client()
    client.create(NS, standin_job("hung", steps=200))
    wait_for_step(client, "hung", 25, 60)
    [rank0] = worker_pids(platform.state_dir, "hung", rank=0)
    os.kill(rank0, signal.SIGSTOP)
    try:
        cond = wait_for(lambda: stalled(client, "hung"), 60, "the Stalled condition")
    finally:
        os.kill(rank0, signal.SIGCONT)  # it takes the restart's SIGTERM: saves, and goes
    assert cond["reason"] == "Stalled"
    assert "no step for" in cond["message"]
    assert "median step time" in cond["message"]
    job = wait_for_phase(client, "hung", ["Succeeded", "Failed"], 120)
    status = job["status"]
    assert status["phase"] == "Succeeded"
    assert status["restarts"] == 1
    assert status["restartsByReason"]["application"] == 1
    assert status["progress"]["step"] == 200
    after = condition(job, "Stalled")
    assert after is not None
    assert (after["status"], after["reason"]) == ("False", "Stepping")
    warned = [e for e in client.events(NS, "hung") if e["reason"] == "Stalled"]
    assert warned
    assert all(e["type"] == "Warning" for e in warned)


def test_a_frozen_progress_feed_is_a_stall_too(tmp_path: Path):
    env = {
        "STANDIN_STEP_SECONDS": "0.05",
        "STANDIN_FREEZE_AT_STEP": "30",  # the first generation only
        "CARINA_CAPACITY_CPUS": "4",
    }
    with running(tmp_path / "state", STANDIN_WORKER, env=env) as up:
        client = up.client()
        client.create(NS, standin_job("frozen", steps=80))
        job = wait_for_phase(client, "frozen", ["Succeeded", "Failed"], 120)
        log = client.logs(NS, "frozen", worker=0, tail=1000)
    status = job["status"]
    assert status["phase"] == "Succeeded"
    assert status["restartsByReason"]["application"] == 1
    assert "frozen at step 30" in log
    assert "resume from 30" in log  # the checkpoint at step 30


def test_a_slow_rank_is_named_a_straggler_by_rank_and_worker(tmp_path: Path):
    env = {
        "STANDIN_STEP_SECONDS": "0.05",
        "STANDIN_SLOW_RANK": "1",
        "STANDIN_SLOW_FACTOR": "3",
        "CARINA_CAPACITY_CPUS": "4",
    }
    with running(tmp_path / "state", STANDIN_WORKER, env=env) as up:
        client = up.client()
        client.create(NS, standin_job("uneven", steps=400, replicas=3))

        def named() -> list[dict[str, Any]] | None:
            return (client.get(NS, "uneven").get("status") or {}).get("stragglers")

        [straggler] = wait_for(named, 60, "status.stragglers")
        events = [e for e in client.events(NS, "uneven") if e["reason"] == "Straggler"]
    assert straggler["rank"] == 1
    assert straggler["worker"] == 1
    assert straggler["node"] == "localhost"  # there is no other node here
    assert straggler["stepSeconds"] > straggler["medianSeconds"]
    [event] = events
    assert event["type"] == "Warning"
    assert "rank 1 (worker 1 on node localhost)" in event["message"]
