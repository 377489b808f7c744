"""Real tiny training runs through the embedded platform: `carina run`, crashes, restarts.

Sized for two CPU cores: the tiny preset, sequences of 64 tokens, a few hundred steps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
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

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NS = "default"
INTERVAL = 25


def tiny_job(name: str, steps: int, replicas: int = 2):
    return (
        make_job(name)
        .with_replicas(replicas)
        .with_quick_pretrain(steps)
        .with_spec(
            checkpoint={"intervalSteps": INTERVAL, "keep": 2}, failurePolicy={"backoffSeconds": 0}
        )
    )


def steps_logged(log: str) -> Counter[int]:
    """How often each step appears in rank 0's JSON log lines."""
    return Counter(int(e["step"]) for e in log_events(log, "step"))


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[CarinaUp]:
    with running(tmp_path / "state", REAL_WORKER) as up:
        yield up


def test_carina_run_trains_a_tiny_model_to_succeeded(tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(dict(tiny_job("first-run", steps=60))))
    env = {k: v for k, v in os.environ.items() if k not in ("CARINA_SERVER", "CARINA_TOKEN")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "carina.platform",
            "run",
            str(manifest),
            "--state-dir",
            str(tmp_path / "state"),
            "--server",
            "http://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    # --server pointing nowhere: the CLI says so instead of a traceback.
    assert result.returncode == 2, result.stderr
    assert "no Carina control plane" in result.stderr
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "carina.platform",
            "run",
            str(manifest),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "CARINA_SERVER": ""},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "first-run: Succeeded" in result.stdout
    assert "last checkpoint: step 60" in result.stdout


def test_a_killed_worker_resumes_from_its_checkpoint_and_succeeds(platform: CarinaUp) -> None:
    client = platform.client()
    client.create(NS, tiny_job("killed", steps=400))
    wait_for_step(client, "killed", INTERVAL + 10, 120)
    for pid in worker_pids(platform.state_dir, "killed", rank=1):
        os.kill(pid, signal.SIGKILL)
    job = wait_for_phase(client, "killed", ["Succeeded", "Failed"], 300)
    assert job["status"]["phase"] == "Succeeded", job["status"]
    assert job["status"]["restarts"] == 1
    log = client.logs(NS, "killed", worker=0, tail=100_000)
    seen = steps_logged(log)
    assert set(seen) == set(range(1, 401))
    # It resumed from a checkpoint, not from the start: at most an interval is trained
    # twice (none when the kill came right after a save).
    [resumed] = log_events(log, "resumed")
    assert resumed["step"] >= INTERVAL
    assert resumed["step"] % INTERVAL == 0
    trained_twice = [step for step, n in seen.items() if n > 1]
    assert len(trained_twice) <= INTERVAL
    assert trained_twice == list(
        range(resumed["step"] + 1, resumed["step"] + 1 + len(trained_twice))
    )


def test_carina_up_killed_mid_job_then_restarted_finishes_the_job(platform: CarinaUp) -> None:
    client = platform.client()
    client.create(NS, tiny_job("survivor", steps=400))
    wait_for_step(client, "survivor", 30, 120)
    platform.kill(signal.SIGKILL)
    platform.start()
    job = wait_for_phase(platform.client(), "survivor", ["Succeeded", "Failed"], 300)
    assert job["status"]["phase"] == "Succeeded", job["status"]
    assert job["status"]["lastCheckpoint"]["step"] == 400
