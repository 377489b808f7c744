"""The `sweep` workload on the embedded platform: two workers form one Ray cluster (worker 0
the head), Ray Tune runs the synthetic objective, whose optimum follows a known power law,
the report is read back over REST and by `carina sweep`; a worker killed mid-sweep restarts
the gang, which reruns no finished trial.

Sized for two CPU cores: one CPU per worker, trials of a second or two, a 96 MiB object store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from builders import make_job
from embedded_platform import REAL_WORKER, running, wait_for, wait_for_phase, worker_pids

pytest.importorskip("ray")
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NS = "default"
TRUE_A, TRUE_B = 4.6, -0.51


def sweep_job(name: str, tokens: list[int], seconds: float) -> dict[str, Any]:
    config = {
        "objective": "synthetic",
        "synthetic": {"a": TRUE_A, "b": TRUE_B, "seconds": seconds},
        "batchSizes": [8],
        "tokens": tokens,
        # η* = 8·4.6·T^-0.51: 0.104 at 1e5 tokens, 0.032 at 1e6, 0.0099 at 1e7: inside the grid.
        "lrs": [0.003, 0.01, 0.03, 0.1, 0.3],
        "trialCpus": 1,
        "objectStoreMb": 96,
        "target": {"tokens": 10**9, "batchSize": 64},
    }
    return (
        make_job(name)
        .with_replicas(2)
        .with_spec(
            workload={"sweep": config},
            resources={"cpu": "1", "memory": "2Gi"},
            failurePolicy={"backoffSeconds": 0},
        )
    )


def ledger_dir(state: Path, name: str) -> Path | None:
    """The job's `sweep/` folder (None until the platform has made its run folder)."""
    folders = list((state / "jobs" / NS).glob(f"{name}-*"))
    return folders[0] / "checkpoints" / "sweep" if folders else None


def ray_folders(name: str) -> list[Path]:
    """The Ray temp folders of a job's two workers, first attempt (`sweep/cluster.py`)."""
    tags = [hashlib.sha256(f"{NS}/{name}/{rank}".encode()).hexdigest()[:8] for rank in (0, 1)]
    return [Path(f"/tmp/ray-{tag}-0") for tag in tags]


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def test_a_two_worker_sweep_fits_the_known_power_law_and_serves_its_report(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    for folder in ray_folders("lr-sweep"):  # an earlier failed run's, kept for its logs
        shutil.rmtree(folder, ignore_errors=True)
    with running(state, REAL_WORKER) as platform:
        client = platform.client()
        client.create(NS, sweep_job("lr-sweep", [10**5, 10**6], seconds=3.0))
        done = wait_for_phase(client, "lr-sweep", ["Succeeded", "Failed"], 300)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["status"]["progress"]["step"] == 10  # trials done, of 10
        report = client.sweep_report(NS, "lr-sweep")
        token = (state / "token").read_text().strip()
        page = client.http.get(
            f"/api/v1/namespaces/{NS}/trainingjobs/lr-sweep/sweep", params={"format": "markdown"}
        )
        cli = subprocess.run(
            [sys.executable, "-m", "carina.platform", "sweep", "lr-sweep"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "CARINA_SERVER": platform.url, "CARINA_TOKEN": token},
        )
    assert report["complete"]
    assert report["trialsFinished"] == 10
    assert report["fit"]["b"] == pytest.approx(TRUE_B, abs=1e-6)
    assert report["fit"]["a"] == pytest.approx(TRUE_A, rel=1e-6)
    assert [round(g["bestLr"], 4) for g in report["groups"]] == [0.1037, 0.0321]
    assert report["recommendation"]["schedule"]["powerB"] == pytest.approx(TRUE_B, abs=1e-6)
    # Both workers' Ray nodes ran trials.
    assert len({t["node"] for t in report["trials"]}) == 2
    assert page.headers["content-type"].startswith("text/markdown")
    assert "| 8 | 100000 |" in page.text
    files = ledger_dir(state, "lr-sweep")
    assert files is not None
    assert (files / "report.md").read_text() == page.text
    assert (files / "power_law.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.returncode == 0, cli.stderr
    # A sweep that succeeded leaves none of Ray's temp folders behind.
    assert not any(folder.exists() for folder in ray_folders("lr-sweep"))
    assert "b = -0.51" in cli.stdout
    assert "powerB -0.51" in cli.stdout


def test_a_killed_worker_restarts_the_sweep_without_rerunning_finished_trials(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    with running(state, REAL_WORKER) as platform:
        client = platform.client()
        client.create(NS, sweep_job("killed-sweep", [10**5, 10**6, 10**7], seconds=3.0))
        ledger = wait_for(lambda: ledger_dir(state, "killed-sweep"), 120, "the run folder")
        wait_for(lambda: len(read_json(ledger / "ledger.json")) >= 4, 240, "4 finished trials")
        [rank1] = worker_pids(state, "killed-sweep", rank=1)
        os.kill(rank1, signal.SIGKILL)
        before = read_json(ledger / "ledger.json")
        done = wait_for_phase(client, "killed-sweep", ["Succeeded", "Failed"], 400)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["status"]["restarts"] == 1
    after = read_json(ledger / "ledger.json")
    starts = read_json(ledger / "starts.json")
    assert len(after) == 15
    # Trials that had finished before the kill started once and kept their result.
    for key, result in before.items():
        assert starts[key] == 1, key
        assert after[key] == result
    # Only the trials running at the kill ran twice (one per CPU at most).
    assert sum(starts.values()) - len(after) <= 2
    report = read_json(ledger / "report.json")
    assert report["complete"]
    assert report["fit"]["b"] == pytest.approx(TRUE_B, abs=1e-6)
    assert report["fit"]["bCi"] is not None  # three token counts: an interval
