"""The local backend end to end with a stand-in worker: real `carina up`, real processes.

The stand-in (standin_worker.py) honours the worker contract without torch, so these
tests exercise the substrate (planning, restarts, recovery, capacity) in seconds; the e2e
tier repeats the important ones with the real training worker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
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
from typer.testing import CliRunner

from carina.platform.cli.client import ApiError
from carina.platform.cli.main import app

NS = "default"


def standin_job(name: str, steps: int = 60, replicas: int = 2, interval: int = 10, **spec):
    return (
        make_job(name)
        .with_replicas(replicas)
        .with_pretrain(steps=steps)
        .with_spec(
            checkpoint={"intervalSteps": interval}, failurePolicy={"backoffSeconds": 0}, **spec
        )
    )


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[CarinaUp]:
    with running(
        tmp_path / "state",
        STANDIN_WORKER,
        env={"STANDIN_STEP_SECONDS": "0.05", "CARINA_CAPACITY_CPUS": "4"},
    ) as up:
        yield up


def test_a_submitted_job_runs_to_succeeded_with_series_events_and_logs(platform: CarinaUp) -> None:
    client = platform.client()
    client.create(NS, standin_job("simple", steps=30))
    job = wait_for_phase(client, "simple", ["Succeeded", "Failed"], 60)
    status = job["status"]
    assert status["phase"] == "Succeeded"
    assert status["restarts"] == 0
    assert status["progress"]["step"] == 30
    assert status["lastCheckpoint"]["step"] == 30
    series = client.metrics(NS, "simple")
    assert series["source"] == "local"
    assert [p["value"] for p in series["step"]][-1] == 30
    assert series["loss"]
    reasons = [e["reason"] for e in client.events(NS, "simple")]
    assert "Created" in reasons
    assert "Succeeded" in reasons
    assert "step 30" in client.logs(NS, "simple", worker=1, tail=5)


def test_a_killed_worker_restarts_the_gang_from_its_checkpoint(platform: CarinaUp) -> None:
    client = platform.client()
    client.create(NS, standin_job("killed", steps=80, interval=10))
    killed_at = wait_for_step(client, "killed", 25, 60)
    for pid in worker_pids(platform.state_dir, "killed", rank=0):
        os.kill(pid, signal.SIGKILL)
    job = wait_for_phase(client, "killed", ["Succeeded", "Failed"], 90)
    assert job["status"]["phase"] == "Succeeded"
    assert job["status"]["restarts"] == 1
    assert job["status"]["restartsByReason"]["application"] == 1
    log = client.logs(NS, "killed", worker=0, tail=1000)
    resumed = [int(m) for m in re.findall(r"resume from (\d+)", log)]
    assert resumed[0] == 0
    assert len(resumed) == 2
    # No step trained twice beyond the checkpoint interval.
    assert killed_at - resumed[1] <= 10 + 5  # + the steps between our look and the kill


def test_logs_of_one_restart_read_that_generation_of_the_worker_log(
    platform: CarinaUp,
) -> None:
    client = platform.client()
    client.create(NS, standin_job("again", steps=60, interval=10))
    wait_for_step(client, "again", 15, 60)
    for pid in worker_pids(platform.state_dir, "again", rank=0):
        os.kill(pid, signal.SIGKILL)
    job = wait_for_phase(client, "again", ["Succeeded", "Failed"], 90)
    assert job["status"]["restarts"] == 1
    first = client.logs(NS, "again", worker=0, tail=1000, restart=0)
    second = client.logs(NS, "again", worker=0, tail=1000, restart=1)
    assert first.startswith("--- carina: worker 0, restart 0\n")
    assert second.startswith("--- carina: worker 0, restart 1\n")
    assert re.findall(r"resume from (\d+)", first) == ["0"]
    assert int(re.findall(r"resume from (\d+)", second)[0]) >= 10
    assert "step 60" in second
    assert "step 60" not in first
    # Without --restart: the whole log, every generation.
    whole = client.logs(NS, "again", worker=0, tail=1000)
    assert "restart 0" in whole
    assert "restart 1" in whole

    token = (platform.state_dir / "token").read_text().strip()
    env = {"CARINA_SERVER": platform.url, "CARINA_TOKEN": token, "CARINA_NAMESPACE": NS}
    tail = CliRunner().invoke(app, ["logs", "again", "--restart", "1", "--tail", "1"], env=env)
    assert tail.exit_code == 0, tail.output
    assert tail.output.strip() == "step 60"
    missing = CliRunner().invoke(app, ["logs", "again", "--restart", "2"], env=env)
    assert missing.exit_code == 1
    assert "404" in missing.output
    assert "no log of restart 2" in missing.output


def test_a_crashed_carina_up_adopts_its_running_workers(platform: CarinaUp) -> None:
    client = platform.client()
    client.create(NS, standin_job("adopted", steps=120))
    wait_for_step(client, "adopted", 20, 60)
    platform.kill(signal.SIGKILL)
    assert worker_pids(platform.state_dir, "adopted")  # the workers kept going
    platform.start()
    job = wait_for_phase(platform.client(), "adopted", ["Succeeded", "Failed"], 90)
    assert job["status"]["phase"] == "Succeeded"
    assert job["status"]["restarts"] == 0


def test_a_stopped_carina_up_resumes_its_jobs_from_their_checkpoints(platform: CarinaUp) -> None:
    client = platform.client()
    client.create(NS, standin_job("resumed", steps=120))
    wait_for_step(client, "resumed", 20, 60)
    platform.kill(signal.SIGTERM)  # workers save a checkpoint and exit 75
    assert not worker_pids(platform.state_dir, "resumed")
    platform.start()
    job = wait_for_phase(platform.client(), "resumed", ["Succeeded", "Failed"], 90)
    assert job["status"]["phase"] == "Succeeded"
    assert job["status"]["restartsByReason"]["preemption"] == 1
    log = platform.client().logs(NS, "resumed", worker=0, tail=1000)
    assert int(re.findall(r"resume from (\d+)", log)[-1]) >= 20


def test_suspend_stops_the_workers_and_resume_continues_from_the_checkpoint(
    platform: CarinaUp,
) -> None:
    client = platform.client()
    client.create(NS, standin_job("paused", steps=120))
    wait_for_step(client, "paused", 20, 60)
    client.suspend(NS, "paused", True)
    wait_for_phase(client, "paused", ["Suspended"], 30)
    wait_for(lambda: not worker_pids(platform.state_dir, "paused"), 30, "workers to stop")
    client.suspend(NS, "paused", False)
    job = wait_for_phase(client, "paused", ["Succeeded", "Failed"], 90)
    assert job["status"]["phase"] == "Succeeded"
    log = client.logs(NS, "paused", worker=0, tail=1000)
    assert int(re.findall(r"resume from (\d+)", log)[-1]) >= 20


def test_jobs_beyond_the_machine_wait_their_turn(platform: CarinaUp) -> None:
    client = platform.client()
    first = standin_job("first", steps=60).with_spec(resources={"cpu": "2"})
    second = standin_job("second", steps=20).with_spec(resources={"cpu": "2"})
    client.create(NS, first)
    wait_for_phase(client, "first", ["Running"], 30)
    client.create(NS, second)
    queued = wait_for_phase(client, "second", ["Queued"], 30)
    admitted = next(c for c in queued["status"]["conditions"] if c["type"] == "Admitted")
    assert admitted["status"] == "False"
    assert wait_for_phase(client, "first", ["Succeeded"], 60)
    assert wait_for_phase(client, "second", ["Succeeded"], 60)


def test_a_permanent_exit_code_fails_the_job_without_a_restart(tmp_path: Path) -> None:
    up = CarinaUp(
        tmp_path / "state",
        STANDIN_WORKER,
        env={"STANDIN_EXIT_AT_STEP": "5", "STANDIN_EXIT_CODE": "64"},
    ).start()
    try:
        client = up.client()
        client.create(NS, standin_job("bad", steps=30, replicas=1))
        job = wait_for_phase(client, "bad", ["Succeeded", "Failed"], 60)
        failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == "PermanentExitCode"
        assert job["status"]["restarts"] == 0
    finally:
        up.stop()


def test_deleting_a_running_job_stops_its_workers(platform: CarinaUp) -> None:
    client = platform.client()
    client.create(NS, standin_job("doomed", steps=1000))
    wait_for_phase(client, "doomed", ["Running"], 30)
    client.delete(NS, "doomed")

    def gone() -> bool:
        try:
            client.get(NS, "doomed")
        except ApiError as exc:
            return exc.status == 404
        return False

    wait_for(gone, 30, "the job to be deleted")
    assert not worker_pids(platform.state_dir, "doomed")


def test_the_cli_submits_lists_gets_tails_and_deletes_against_a_server(
    platform: CarinaUp, tmp_path: Path
) -> None:
    runner = CliRunner()
    token = (platform.state_dir / "token").read_text().strip()
    env = {"CARINA_SERVER": platform.url, "CARINA_TOKEN": token, "CARINA_NAMESPACE": "default"}
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(dict(standin_job("from-cli", steps=20))))

    submitted = runner.invoke(app, ["submit", str(manifest)], env=env)
    assert submitted.exit_code == 0, submitted.output
    assert "trainingjob default/from-cli created" in submitted.output
    wait_for_phase(platform.client(), "from-cli", ["Succeeded"], 60)

    listed = runner.invoke(app, ["list"], env=env)
    assert listed.exit_code == 0
    assert "from-cli" in listed.output
    assert "Succeeded" in listed.output
    got = runner.invoke(app, ["get", "from-cli", "-o", "json"], env=env)
    assert json.loads(got.output)["status"]["phase"] == "Succeeded"
    logs = runner.invoke(app, ["logs", "from-cli", "--worker", "1", "--tail", "1"], env=env)
    assert logs.output.strip() == "step 20"
    again = runner.invoke(app, ["submit", str(manifest)], env=env)
    assert again.exit_code == 1
    assert "409 AlreadyExists" in again.output
    deleted = runner.invoke(app, ["delete", "from-cli", "--wait"], env=env)
    assert deleted.exit_code == 0
    missing = runner.invoke(app, ["get", "from-cli"], env=env)
    assert missing.exit_code == 1
    assert "404 NotFound" in missing.output
    denied = runner.invoke(app, ["list"], env={**env, "CARINA_TOKEN": "wrong"})
    assert denied.exit_code == 1
    assert "401" in denied.output


def test_ctrl_c_on_carina_run_checkpoints_and_the_next_run_resumes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(dict(standin_job("interrupted", steps=300))))
    env = {
        **os.environ,
        "CARINA_WORKER_COMMAND": json.dumps(STANDIN_WORKER),
        "STANDIN_STEP_SECONDS": "0.05",
        "CARINA_SERVER": "",
    }
    command = [
        sys.executable,
        "-m",
        "carina.platform",
        "run",
        str(manifest),
        "--embedded",
        "--state-dir",
        str(state),
    ]
    first = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_for(lambda: worker_pids(state, "interrupted"), 60, "workers to start")
    time.sleep(3)
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 130, out
    assert "interrupted: the workers save a checkpoint" in out
    assert not worker_pids(state, "interrupted")

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "interrupted: Succeeded" in second.stdout
    log = next(state.glob("jobs/default/interrupted-*/logs/worker-0.log")).read_text()
    assert int(re.findall(r"resume from (\d+)", log)[-1]) > 0
