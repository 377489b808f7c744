"""The sweep's config: the grid, the field rules and the Ray node plan on each substrate."""

from __future__ import annotations

import sys

import pytest
from builders import make_job
from pydantic import ValidationError

from carina.platform.api.types import TrainingJob
from carina.platform.embedded.paths import local_path_fields
from carina.workloads.config import RAY_PORTS, SweepConfig, describe_errors
from carina.workloads.contract import WorkerContext
from carina.workloads.errors import WorkerError
from carina.workloads.sweep.cluster import node_env, node_plan
from carina.workloads.sweep.run import run_sweep


def test_grid_is_every_batch_tokens_lr_combination():
    cfg = SweepConfig(batch_sizes=[8, 16], tokens=[65536, 131072], lrs=[1e-3, 2e-3, 4e-3])
    assert len(cfg.grid()) == 12
    assert cfg.grid()[0] == (8, 65536, 1e-3)


def test_a_proxy_trial_shorter_than_four_steps_is_refused_naming_the_rule():
    with pytest.raises(ValidationError) as err:
        SweepConfig.model_validate({"batchSizes": [64], "tokens": [1000], "seqLen": 64})
    [(_path, rule)] = describe_errors(err.value.errors())
    assert "at least 4 steps" in rule
    # The synthetic objective trains nothing: any token count will do.
    SweepConfig.model_validate({"objective": "synthetic", "batchSizes": [64], "tokens": [1000]})


def test_fewer_than_three_learning_rates_are_refused():
    with pytest.raises(ValidationError) as err:
        SweepConfig.model_validate({"lrs": [1e-3, 2e-3]})
    assert describe_errors(err.value.errors())[0][0] == "lrs"


def ctx(**fields) -> WorkerContext:
    base = {"job": "lr", "namespace": "team-a", "world_size": 3, "local_world_size": 1}
    return WorkerContext(**(base | fields))


def test_on_a_cluster_the_head_listens_on_the_fixed_gcs_port_with_pinned_cpus():
    head = node_plan(
        ctx(master_addr="lr-worker-0.lr.team-a.svc"), SweepConfig(), {"OMP_NUM_THREADS": "4"}
    )
    worker = node_plan(
        ctx(group_rank=2, master_addr="lr-worker-0.lr.team-a.svc"), SweepConfig(), {}
    )
    assert head.head
    assert not worker.head
    assert head.address == worker.address == f"lr-worker-0.lr.team-a.svc:{RAY_PORTS['ray-gcs']}"
    cmd = head.command()
    assert "--head" in cmd
    assert "--include-dashboard=false" in cmd
    assert "--num-cpus=4" in cmd
    assert f"--node-manager-port={RAY_PORTS['ray-node-mgr']}" in cmd
    assert f"--object-store-memory={512 * 1024 * 1024}" in cmd
    assert f"--address={worker.address}" in worker.command()
    assert len(head.temp_dir) < 40
    assert head.temp_dir != worker.temp_dir


def test_on_one_machine_the_head_uses_the_gangs_master_port_and_free_ports():
    plan = node_plan(ctx(master_port=41234), SweepConfig(), {"OMP_NUM_THREADS": "1"})
    assert plan.address == "127.0.0.1:41234"
    assert plan.cpus == 1
    assert plan.ports["node-manager-port"] == 0  # Ray picks
    assert all(p != RAY_PORTS["ray-agent"] for p in plan.ports.values())


def test_the_ray_node_carries_no_rank_variables_and_no_auth_token():
    env = node_env({"RANK": "0", "CARINA_SPEC": "/x", "PATH": "/bin", "AWS_REGION": "r"})
    assert "RANK" not in env
    assert "CARINA_SPEC" not in env
    assert env["PATH"] == "/bin"
    assert env["AWS_REGION"] == "r"
    assert env["RAY_AUTH_MODE"] == "disabled"


def test_the_embedded_platform_checks_a_sweeps_data_paths_like_pretrainings():
    job = TrainingJob.parse(
        make_job("lr").with_spec(
            workload={"sweep": {"data": {"source": "files", "paths": ["/etc/passwd"]}}}
        )
    )
    assert ("spec.workload.sweep.data.paths[0]", "/etc/passwd", False) in list(
        local_path_fields(job)
    )


def test_without_ray_the_worker_exits_bad_config_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    with pytest.raises(WorkerError) as err:
        run_sweep(SweepConfig(objective="synthetic"), ctx(checkpoint_uri=tmp_path.as_uri()))
    assert int(err.value.exit_code) == 64
    assert "pip install 'carina[ray]'" in str(err.value)
