"""The worker contract's environment, and the files a worker leaves behind."""

from __future__ import annotations

import os
from pathlib import Path

from builders import make_job

from carina.platform.api.types import TrainingJob
from carina.platform.controlplane.backends.embedded import TokenFile, ensure_local_token, tail
from carina.platform.embedded.launcher import (
    run_paths,
    spec_document,
    worker_env,
)
from carina.workloads.contract import WorkerContext


def parsed(manifest: dict) -> TrainingJob:
    job = TrainingJob.model_validate(manifest)
    job.metadata.namespace = "team-a"
    return job


def test_each_rank_gets_the_torchrun_and_carina_variables(tmp_path: Path) -> None:
    job = parsed(
        make_job("demo")
        .with_replicas(2)
        .with_spec(checkpoint={"intervalSteps": 7, "keep": 2}, resources={"cpu": "2"})
    )
    paths = run_paths(tmp_path, "team-a", "demo", "0123456789")
    env = worker_env(
        job, paths, index=1, restart=3, master_port=29500, metrics_port=9100, threads=2
    )
    # The worker's entry process gives each rank its RANK and LOCAL_RANK.
    assert "RANK" not in env
    assert "LOCAL_RANK" not in env
    assert env["GROUP_RANK"] == "1"
    assert env["WORLD_SIZE"] == "2"
    assert env["LOCAL_WORLD_SIZE"] == "1"
    assert env["MASTER_ADDR"] == "127.0.0.1"
    assert env["MASTER_PORT"] == "29500"
    assert env["CARINA_JOB"] == "demo"
    assert env["CARINA_NAMESPACE"] == "team-a"
    assert env["CARINA_RESTART"] == "3"
    assert env["CARINA_CHECKPOINT_INTERVAL"] == "7"
    assert env["CARINA_CHECKPOINT_KEEP"] == "2"
    assert (
        env["CARINA_CHECKPOINT_URI"]
        == (tmp_path / "jobs/team-a/demo-01234567/checkpoints").as_uri()
    )
    assert env["CARINA_METRICS_PORT"] == "9100"
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["CARINA_TERMINATION_LOG"].endswith("attempts/3/worker-1.termination")


def test_a_worker_runs_a_rank_per_gpu_on_its_own_gpus_and_shares_its_threads(
    tmp_path: Path,
) -> None:
    job = parsed(make_job("demo").with_replicas(2).with_spec(resources={"gpus": 2, "cpu": "8"}))
    paths = run_paths(tmp_path, "team-a", "demo", "0123456789")
    env = worker_env(job, paths, 1, 0, 29500, 9100, threads=8, gpus=[2, 3])
    assert env["LOCAL_WORLD_SIZE"] == "2"
    assert env["WORLD_SIZE"] == "4"
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert env["OMP_NUM_THREADS"] == "4"
    ranks = [WorkerContext.from_env(env).for_rank(i).rank for i in range(2)]
    assert ranks == [2, 3]


def test_a_cpu_worker_runs_the_ranks_it_asks_for(tmp_path: Path) -> None:
    job = parsed(make_job("demo").with_replicas(2).with_spec(resources={"ranksPerWorker": 3}))
    env = worker_env(job, run_paths(tmp_path, "ns", "demo", "u"), 0, 0, 1, 2, 1)
    assert env["LOCAL_WORLD_SIZE"] == "3"
    assert env["WORLD_SIZE"] == "6"
    assert "CUDA_VISIBLE_DEVICES" not in env


def test_a_checkpoint_uri_in_the_spec_wins(tmp_path: Path) -> None:
    job = parsed(make_job().with_spec(checkpoint={"uri": "s3://bucket/ckpt"}))
    env = worker_env(job, run_paths(tmp_path, "ns", "demo", "u"), 0, 0, 1, 2, 1)
    assert env["CARINA_CHECKPOINT_URI"] == "s3://bucket/ckpt"


def test_the_spec_file_holds_the_workload_kind_and_its_camel_case_config() -> None:
    doc = spec_document(parsed(make_job().with_pretrain(seqLen=64)))
    assert doc["kind"] == "pretrain"
    assert doc["config"]["seqLen"] == 64


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert tail(log, 3) == "line 99997\nline 99998\nline 99999\n"


def test_the_local_token_is_written_once_and_sees_every_namespace(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    token = ensure_local_token(tokens)
    assert ensure_local_token(tokens) == token
    assert oct(os.stat(tokens).st_mode & 0o777) == "0o600"
    assert token not in tokens.read_text()  # stored as a digest
    principal = TokenFile(tokens).lookup(token)
    assert principal is not None
    assert principal.namespaces is None
    assert TokenFile(tokens).lookup("guess") is None
