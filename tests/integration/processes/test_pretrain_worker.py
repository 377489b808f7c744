"""The worker contract end to end: `python -m carina.workloads` as a substrate runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from workload_builders import tiny_config, write_spec

from carina.platform.planning.progress import parse_progress
from carina.workloads.config import ExitCode
from carina.workloads.runtime import checkpoint
from carina.workloads.runtime.storage import open_store
from carina.workloads.worker import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_env(tmp_path: Path, spec: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARINA_", "RANK"))}
    env.update(
        CARINA_SPEC=str(spec),
        CARINA_JOB="job-a",
        CARINA_NAMESPACE="team-a",
        CARINA_CHECKPOINT_URI=f"file://{tmp_path}/ckpt",
        CARINA_METRICS_PORT=str(free_port()),
        CARINA_TERMINATION_LOG=str(tmp_path / "termination-log"),
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def scraped_step(env: dict[str, str]) -> int:
    """The step a substrate reads from the worker's /metrics now (0: none yet)."""
    url = f"http://127.0.0.1:{env['CARINA_METRICS_PORT']}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            progress = parse_progress(resp.read().decode(), datetime.now(UTC))
    except OSError:
        return 0
    return progress.step if progress is not None else 0


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_invalid_spec_exits_64_with_the_field_path(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kind": "pretrain", "config": {"model": {"nHeads": "x"}}}))
    assert main({"CARINA_SPEC": str(spec)}) == ExitCode.BAD_CONFIG
    err = capsys.readouterr().err
    assert "config.model.nHeads" in err
    assert "Traceback" not in err


def test_missing_spec_file_exits_66(tmp_path: Path) -> None:
    assert main({"CARINA_SPEC": str(tmp_path / "nope.json")}) == ExitCode.NO_INPUT


def test_a_kind_without_a_runner_exits_64(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kind": "unknown", "config": {}}))
    assert main({"CARINA_SPEC": str(spec)}) == ExitCode.BAD_CONFIG
    assert "kind" in capsys.readouterr().err


def test_micro_batch_not_divisible_by_world_size_exits_64(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path / "spec.json", tiny_config(microBatchSize=3, batchSize=9))
    env = {"CARINA_SPEC": str(spec), "RANK": "0", "WORLD_SIZE": "2"}
    # WORLD_SIZE 2 and no rendezvous address: the check fires before any process group.
    assert main(env) == ExitCode.BAD_CONFIG
    assert "config.microBatchSize" in capsys.readouterr().err


def test_sigterm_leaves_a_complete_resumable_checkpoint_and_exits_75(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.json", tiny_config(steps=100_000, logEvery=1))
    env = worker_env(tmp_path, spec)
    proc = subprocess.Popen(
        [sys.executable, "-m", "carina.workloads"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if scraped_step(env) >= 3:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.PREEMPTED, stderr

    said = json.loads((tmp_path / "termination-log").read_text())
    ack = said["checkpoint"]
    store = open_store(f"file://{tmp_path}/ckpt")
    latest = checkpoint.latest(store)
    assert latest is not None
    assert ack == {"step": latest.step, "uri": latest.uri}
    manifest = checkpoint.read_manifest(store, latest.step)
    assert set(manifest["files"]) <= {p.name for p in Path(latest.uri[7:]).iterdir()}
    assert said["progress"]["step"] == latest.step  # the final word: where it stopped
    assert said["progress"]["totalSteps"] == 100_000

    # Resumable: a restart continues from that step and finishes.
    write_spec(spec, tiny_config(steps=latest.step + 2, logEvery=1))
    done = subprocess.run(
        [sys.executable, "-m", "carina.workloads"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == ExitCode.SUCCEEDED, done.stderr
    log = events(done.stdout)
    assert {"event": "resumed", "step": latest.step}.items() <= log[0].items()
    assert [e["step"] for e in log if e["event"] == "step"] == [latest.step + 1, latest.step + 2]
    said = json.loads((tmp_path / "termination-log").read_text())
    assert said["progress"]["step"] == latest.step + 2  # a success has its final word too
    assert said["checkpoint"]["step"] == latest.step + 2


@pytest.mark.slow
def test_two_gloo_ranks_under_torchrun_train_and_the_loss_falls(tmp_path: Path) -> None:
    cfg = tiny_config(
        steps=40,
        batchSize=16,
        microBatchSize=8,
        evalEvery=20,
        schedule={"kind": "constant", "warmupSteps": 2},
    )
    spec = write_spec(tmp_path / "spec.json", cfg)
    env = worker_env(tmp_path, spec, CARINA_CHECKPOINT_INTERVAL="20")
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "--standalone", "-m", "carina.workloads"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = events(done.stdout)
    assert log[0]["event"] == "start"
    assert log[0]["worldSize"] == 2
    losses = [e["loss"] for e in log if e["event"] == "step"]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert checkpoint.complete_steps(open_store(f"file://{tmp_path}/ckpt")) == [20, 40]
    manifest = checkpoint.read_manifest(open_store(f"file://{tmp_path}/ckpt"), 40)
    assert manifest["worldSize"] == 2
    assert len(manifest["files"]) == 4


@pytest.mark.slow
def test_sigterm_to_torchrun_makes_both_ranks_agree_and_save_once(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "spec.json", tiny_config(steps=100_000, batchSize=16, microBatchSize=8)
    )
    env = worker_env(tmp_path, spec)
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.Popen(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "carina.workloads"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while scraped_step(env) < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no step 3 before the deadline"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both ranks
    stdout, _ = proc.communicate(timeout=120)
    # torchrun reports any worker failure as 1; the contract's 75 is the workers' own code.
    assert proc.returncode != 0
    log = events(stdout)
    saved = [e for e in log if e["event"] == "checkpoint"]
    assert len(saved) == 1
    assert any(e["event"] == "preempted" for e in log)
    ack = json.loads((tmp_path / "termination-log").read_text())["checkpoint"]
    assert ack == {"step": saved[0]["step"], "uri": saved[0]["uri"]}
    manifest = checkpoint.read_manifest(open_store(f"file://{tmp_path}/ckpt"), ack["step"])
    assert manifest["worldSize"] == 2
    assert "rng-rank-00001.safetensors" in manifest["files"]
