"""A sweep job on a real control plane with kwok nodes: the API server accepts it and refuses
a bad grid with the rule, and its rendered head and worker pods run with Ray's roles and ports.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import make_job

from carina.platform.api.types import TrainingJob
from carina.platform.planning.render import RAY_ROLE_LABEL, RenderSettings, build_worker_pod
from carina.testcluster import TestCluster
from carina.testcluster.processes import wait_until

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = RenderSettings(image="carina/worker:test")


def create(cluster: TestCluster, manifest: dict[str, Any]) -> dict[str, Any]:
    out = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest)).stdout
    return json.loads(out)


def sweep_manifest(namespace: str, **config: Any) -> dict[str, Any]:
    manifest = (
        make_job("lr-sweep")
        .with_replicas(2)
        .with_spec(
            workload={"sweep": {"objective": "synthetic", **config}},
            resources={"cpu": "2", "memory": "1Gi"},
        )
    )
    manifest["metadata"]["namespace"] = namespace
    return dict(manifest)


def test_sweep_pods_run_with_head_and_worker_roles_and_named_ray_ports(
    k8s_cluster: TestCluster, namespace: str
) -> None:
    job = TrainingJob.parse(create(k8s_cluster, sweep_manifest(namespace)))
    assert job.spec.workload.sweep is not None
    assert job.spec.workload.sweep.schedule.kind == "wsd"  # the server applied the defaults
    names = []
    for index in (0, 1):
        pod = create(k8s_cluster, build_worker_pod(job, index, 0, SETTINGS))
        names.append(pod["metadata"]["name"])

    def running() -> bool:
        pods = [k8s_cluster.get_json("pod", n, "-n", namespace) for n in names]
        return all(p["status"].get("phase") == "Running" for p in pods)

    wait_until(running, 60, "both sweep pods Running")
    listed = k8s_cluster.get_json("pods", "-n", namespace, "-l", f"{RAY_ROLE_LABEL}=head")
    assert [p["metadata"]["name"] for p in listed["items"]] == [names[0]]
    worker = k8s_cluster.get_json("pod", names[1], "-n", namespace)
    ports = {p["name"]: p["containerPort"] for p in worker["spec"]["containers"][0]["ports"]}
    assert ports["ray-gcs"] == 6379
    assert ports["ray-obj-mgr"] == 6381
    assert worker["metadata"]["labels"][RAY_ROLE_LABEL] == "worker"


def test_the_api_server_refuses_proxy_trials_too_short_to_decay(
    k8s_cluster: TestCluster, namespace: str
) -> None:
    bad = sweep_manifest(namespace, objective="proxy", batchSizes=[64], tokens=[1000])
    with pytest.raises(subprocess.CalledProcessError) as err:
        create(k8s_cluster, bad)
    assert "every tokens value must give at least 4 steps" in err.value.stderr


def test_the_sweep_example_is_accepted_as_written(k8s_cluster: TestCluster, namespace: str) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "sweep.yaml").read_text())
    manifest["metadata"]["namespace"] = namespace
    stored = create(k8s_cluster, manifest)
    assert stored["spec"]["workload"]["sweep"]["trialGpus"] == 0.25
