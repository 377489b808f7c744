"""Workers of several ranks on the embedded platform: world size, a killed rank, a failing rank.

A worker is a process group like a pod: its entry process starts `ranksPerWorker` ranks (one
per GPU on a GPU machine), relays SIGTERM and exits with the first failing rank's code.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import make_job
from embedded_platform import (
    REAL_WORKER,
    STANDIN_WORKER,
    CarinaUp,
    log_events,
    running,
    wait_for,
    wait_for_phase,
    wait_for_step,
    worker_pids,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NS = "default"


@pytest.fixture
def real(tmp_path: Path) -> Iterator[CarinaUp]:
    with running(tmp_path / "state", REAL_WORKER, env={"CARINA_CAPACITY_CPUS": "4"}) as up:
        yield up


def test_two_workers_of_two_ranks_train_as_world_size_4_and_survive_a_killed_rank(
    real: CarinaUp,
) -> None:
    client = real.client()
    job = (
        make_job("ranks")
        .with_replicas(2)
        .with_quick_pretrain(80)
        .with_spec(
            resources={"cpu": "1", "ranksPerWorker": 2},
            checkpoint={"intervalSteps": 20, "keep": 2},
            failurePolicy={"backoffSeconds": 0},
        )
    )
    client.create(NS, job)
    wait_for_step(client, "ranks", 30, 180)
    # Rank 3 is local rank 1 of worker 1: the gang restarts from the newest checkpoint.
    victims = worker_pids(real.state_dir, "ranks", rank=3)
    assert len(victims) == 1
    os.kill(victims[0], signal.SIGKILL)
    done = wait_for_phase(client, "ranks", ["Succeeded", "Failed"], 400)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["restarts"] == 1
    assert done["status"]["restartsByReason"]["application"] == 1
    events = log_events(client.logs(NS, "ranks", worker=0, tail=100_000))
    starts = [e for e in events if e.get("event") == "start"]
    assert [s["worldSize"] for s in starts] == [4, 4]
    resumed = [e for e in events if e.get("event") == "resumed"]
    assert len(resumed) == 1
    assert resumed[0]["step"] >= 20


def test_a_permanent_exit_of_local_rank_1_fails_the_job_and_names_the_rank(
    tmp_path: Path,
) -> None:
    up = CarinaUp(
        tmp_path / "state",
        STANDIN_WORKER,
        env={"STANDIN_EXIT_AT_STEP": "5", "STANDIN_EXIT_CODE": "65", "STANDIN_EXIT_RANK": "3"},
    ).start()
    try:
        client = up.client()
        job = (
            make_job("bad-data")
            .with_replicas(2)
            .with_quick_pretrain(200)
            .with_spec(resources={"cpu": "100m", "ranksPerWorker": 2})
        )
        client.create(NS, job)
        done = wait_for_phase(client, "bad-data", ["Succeeded", "Failed"], 60)
    finally:
        up.stop()
    status = done["status"]
    assert status["phase"] == "Failed"
    assert status["restarts"] == 0
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PermanentExitCode"
    assert "rank 3" in failed["message"], failed["message"]
    assert "65" in failed["message"], failed["message"]


def test_each_worker_gets_its_own_gpus_and_a_gang_too_big_stays_pending(tmp_path: Path) -> None:
    # The stand-in worker needs no GPU: the test checks which devices each worker is given.
    up = CarinaUp(
        tmp_path / "state",
        STANDIN_WORKER,
        env={"CARINA_CAPACITY_GPUS": "4", "STANDIN_STEP_SECONDS": "0.2"},
    ).start()
    try:
        client = up.client()
        gpu = {"gpus": 2, "cpu": "100m"}
        client.create(NS, make_job("a").with_quick_pretrain(300).with_spec(resources=gpu))
        client.create(NS, make_job("b").with_quick_pretrain(300).with_spec(resources=gpu))
        too_big = make_job("c").with_replicas(3).with_quick_pretrain(10).with_spec(resources=gpu)
        client.create(NS, too_big)
        for name in ("a", "b"):
            wait_for_phase(client, name, ["Running"], 60)
        devices = {}
        for name in ("a", "b"):
            # Running means the worker's entry process runs; its ranks start a moment later.
            ranks = wait_for(
                lambda name=name: (
                    pids if len(pids := worker_pids(up.state_dir, name)) == 2 else None
                ),
                60,
                f"the two ranks of {name}",
            )
            seen = {_environ_of(pid)["CUDA_VISIBLE_DEVICES"] for pid in ranks}
            assert len(seen) == 1, seen  # both ranks of a worker see the worker's GPUs
            devices[name] = seen.pop()
        assert sorted(devices.values()) == ["0,1", "2,3"]
        pending = client.get(NS, "c")["status"]
        assert pending["phase"] == "Pending"
        admitted = next(c for c in pending["conditions"] if c["type"] == "Admitted")
        assert admitted["reason"] == "ExceedsMaxQuota"
        assert "needs 6 GPUs" in admitted["message"]
        assert "more than this-machine can ever hold (4)" in admitted["message"]
    finally:
        up.stop()


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
