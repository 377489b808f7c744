"""The `vision` workload (DeiT-LT) through the embedded platform: the shipped example with
`carina run`, and a worker killed mid-run that resumes from its checkpoint.

Sized for two CPU cores: the example's own configuration with fewer epochs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from builders import make_job
from embedded_platform import (
    REAL_WORKER,
    log_events,
    running,
    wait_for_phase,
    wait_for_step,
    worker_pids,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NS = "default"
# 250 training images at ratio 100 in batches of 32: 8 steps an epoch.
STEPS_PER_EPOCH = 8


def example(teacher_epochs: int, epochs: int, **spec: Any) -> dict[str, Any]:
    """The shipped example with fewer epochs (and `spec` laid over its spec)."""
    manifest = yaml.safe_load((ROOT / "examples" / "vision-deit-lt.yaml").read_text())
    config = manifest["spec"]["workload"]["vision"]
    config["teacher"]["epochs"] = teacher_epochs
    config.update(epochs=epochs, logEvery=4)
    manifest["spec"].update(spec)
    return manifest


def test_the_deit_lt_example_runs_with_carina_run_and_reports(tmp_path: Path) -> None:
    manifest = example(teacher_epochs=3, epochs=4)
    assert manifest["spec"]["replicas"] == 2  # data parallel over two workers (gloo)
    path = tmp_path / "vision.yaml"
    path.write_text(yaml.safe_dump(manifest))
    env = {k: v for k, v in os.environ.items() if k not in ("CARINA_SERVER", "CARINA_TOKEN")}
    state = str(tmp_path / "state")
    result = subprocess.run(
        [sys.executable, "-m", "carina.platform", "run", str(path), "--state-dir", state],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "CARINA_SERVER": ""},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "vision-deit-lt: Succeeded" in result.stdout
    found = re.search(r"last checkpoint: step (\d+) at (\S+)", result.stdout)
    assert found is not None, result.stdout
    total = (3 + 4) * STEPS_PER_EPOCH
    assert int(found.group(1)) == total
    # The report lies next to the checkpoints.
    root = Path(urlparse(found.group(2)).path).parent
    report = json.loads((root / "report.json").read_text())
    assert set(report["student"]) == {"cls", "dist", "avg"}
    for acc in [*report["student"].values(), report["teacher"]]:
        assert {"overall", "head", "medium", "tail", "perClass"} <= acc.keys()
    assert report["groups"] == {"head": [0, 1, 2, 3], "medium": [4, 5, 6], "tail": [7, 8, 9]}
    assert report["teacher"]["overall"] > 0.2  # far above chance (0.1) after 3 epochs
    assert "| teacher |" in (root / "report.md").read_text()
    assert (root / "teacher" / f"step-{3 * STEPS_PER_EPOCH:08d}" / "manifest.json").exists()


def test_a_killed_vision_worker_resumes_from_its_checkpoint_in_the_student_phase(
    tmp_path: Path,
) -> None:
    interval, teacher_steps = 16, 2 * STEPS_PER_EPOCH
    job = (
        make_job("killed-vision")
        .with_replicas(1)
        .with_vision(
            teacher={"epochs": 2, "lr": 0.005},
            epochs=40,
            batchSize=32,
            logEvery=1,
            optimizer={"lr": 0.003, "betas": [0.9, 0.999], "weightDecay": 0.05},
        )
        .with_spec(
            checkpoint={"intervalSteps": interval, "keep": 2}, failurePolicy={"backoffSeconds": 0}
        )
    )
    total = teacher_steps + 40 * STEPS_PER_EPOCH
    with running(tmp_path / "state", REAL_WORKER) as platform:
        client = platform.client()
        client.create(NS, job)
        # Past the teacher phase and past a student checkpoint, well before the end.
        wait_for_step(client, "killed-vision", teacher_steps + interval + 4, 120)
        for pid in worker_pids(platform.state_dir, "killed-vision", rank=0):
            os.kill(pid, signal.SIGKILL)
        done = wait_for_phase(client, "killed-vision", ["Succeeded", "Failed"], 300)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["status"]["restarts"] == 1
        assert done["status"]["lastCheckpoint"]["step"] == total
        log = client.logs(NS, "killed-vision", worker=0, tail=100_000)
    [resumed] = log_events(log, "resumed")
    # From its newest checkpoint, in the student phase: not from step 0, not from the teacher.
    assert resumed["step"] > teacher_steps
    assert resumed["step"] % interval == 0
    starts = log_events(log, "start")
    assert [s["phase"] for s in starts] == ["teacher", "student"]
    assert starts[1]["step"] == resumed["step"]
    teacher_trained = [e for e in log_events(log, "step") if e["phase"] == "teacher"]
    assert [e["step"] for e in teacher_trained] == list(range(1, teacher_steps + 1))  # once
    assert log_events(log, "teacher_loaded")[-1]["step"] == teacher_steps
    after = [e["step"] for e in log_events(log, "step") if e["step"] > resumed["step"]]
    assert after[-1] == total
