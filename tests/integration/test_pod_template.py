"""Worker pods shaped by a TrainingJob's template, on a real control plane with kwok nodes.

Each test stores a TrainingJob, reads it back as the operator does, renders worker 0 with
`build_worker_pod` and creates it: the API server must accept the pod, the scheduler place it
and kwok run it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import make_job

from carina.platform.api.types import TrainingJob
from carina.platform.planning.render import RenderSettings, build_worker_pod
from carina.platform.planning.template import pvc_volume_name
from carina.testcluster import TestCluster
from carina.testcluster.processes import wait_until

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = RenderSettings(image="carina/worker:test")
TIMEOUT = 60


def create(cluster: TestCluster, manifest: dict[str, Any]) -> dict[str, Any]:
    out = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest)).stdout
    return json.loads(out)


def stored_job(cluster: TestCluster, namespace: str, manifest: dict[str, Any]) -> TrainingJob:
    """The job as the API server stores it (defaulted, pruned): what the operator reads."""
    manifest = json.loads(json.dumps(manifest))
    manifest["metadata"]["namespace"] = namespace
    return TrainingJob.parse(create(cluster, manifest))


def run_worker(cluster: TestCluster, job: TrainingJob) -> dict[str, Any]:
    """Create worker 0 of `job` and wait until kwok runs it."""
    pod = create(cluster, build_worker_pod(job, 0, 0, SETTINGS))
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    seen: dict[str, Any] = {}

    def running() -> bool:
        seen.update(cluster.get_json("pod", name, "-n", ns))
        return seen["status"].get("phase") == "Running"

    try:
        wait_until(running, TIMEOUT, f"pod {name} Running")
    except TimeoutError:
        raise AssertionError(f"pod {name} not running: {json.dumps(seen.get('status'))}") from None
    return seen


def container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]


def create_secret(cluster: TestCluster, namespace: str, name: str, **data: str) -> None:
    literals = [f"--from-literal={k}={v}" for k, v in data.items()]
    cluster.kubectl("create", "secret", "generic", name, "-n", namespace, *literals)


def create_bound_claim(cluster: TestCluster, namespace: str, claim: str) -> None:
    """A claim bound to a hostPath volume of its own (the test cluster has no provisioner)."""
    volume = f"{namespace}-{claim}"[:63]
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": volume},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": "",
                    "hostPath": {"path": f"/tmp/{volume}"},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "resources": {"requests": {"storage": "1Gi"}},
                    "storageClassName": "",
                    "volumeName": volume,
                },
            },
        ]
    )

    def bound() -> bool:
        pvc = cluster.get_json("pvc", claim, "-n", namespace)
        return pvc.get("status", {}).get("phase") == "Bound"

    wait_until(bound, TIMEOUT, f"claim {claim} Bound")


@pytest.fixture
def claims(k8s_cluster: TestCluster, namespace: str):
    """Makes bound claims in the test's namespace; their volumes go when the test ends."""
    made: list[str] = []

    def make(name: str) -> None:
        create_bound_claim(k8s_cluster, namespace, name)
        made.append(f"{namespace}-{name}"[:63])

    yield make
    for volume in made:
        k8s_cluster.kubectl("delete", "pv", volume, "--wait=false", check=False)


def test_secret_keys_reach_the_worker_through_env_from(k8s_cluster, namespace):
    keys = {"AWS_ACCESS_KEY_ID": "carina", "AWS_SECRET_ACCESS_KEY": "secret"}
    create_secret(k8s_cluster, namespace, "s3-credentials", **keys)
    template = {"spec": {"envFrom": [{"secretRef": {"name": "s3-credentials"}}]}}
    manifest = make_job("llm").with_spec(
        template=template, resources={"cpu": "10m", "memory": "16Mi"}
    )
    pod = run_worker(k8s_cluster, stored_job(k8s_cluster, namespace, manifest))
    assert container(pod)["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    secret = k8s_cluster.get_json("secret", "s3-credentials", "-n", namespace)
    assert set(secret["data"]) == set(keys)


def test_pvc_checkpoint_uri_becomes_a_claim_volume_the_worker_runs_with(
    k8s_cluster, namespace, claims
):
    claims("ckpts")
    manifest = make_job("llm").with_spec(
        checkpoint={"uri": "pvc://ckpts/llm"}, resources={"cpu": "10m", "memory": "16Mi"}
    )
    pod = run_worker(k8s_cluster, stored_job(k8s_cluster, namespace, manifest))
    name = pvc_volume_name("ckpts")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[name]["persistentVolumeClaim"] == {"claimName": "ckpts"}
    mounts = {m["name"]: m for m in container(pod)["volumeMounts"]}
    assert mounts[name]["mountPath"] == "/mnt/pvc/ckpts"
    assert not mounts[name].get("readOnly")


def test_vela_example_runs_on_its_pool_with_its_corpus_claim_and_s3_secret(k8s_cluster, namespace):
    example = yaml.safe_load((ROOT / "examples" / "vela-pretrain-350m.yaml").read_text())
    # The claim and Secret README's walkthrough applies, in this test's namespace.
    storage = list(
        yaml.safe_load_all((ROOT / "examples" / "test-cluster" / "vela-storage.yaml").read_text())
    )
    volume = f"{namespace}-corpus"[:63]
    for obj in storage:
        if obj["kind"] == "PersistentVolume":
            obj["metadata"]["name"] = volume
        else:
            obj["metadata"]["namespace"] = namespace
        if obj["kind"] == "PersistentVolumeClaim":
            obj["spec"]["volumeName"] = volume
    k8s_cluster.apply(storage)
    try:
        wait_until(
            lambda: (
                k8s_cluster.get_json("pvc", "corpus", "-n", namespace)
                .get("status", {})
                .get("phase")
                == "Bound"
            ),
            TIMEOUT,
            "claim corpus Bound",
        )
        pod = run_worker(k8s_cluster, stored_job(k8s_cluster, namespace, example))
        node = k8s_cluster.get_json("node", pod["spec"]["nodeName"])
        assert node["metadata"]["labels"]["carina.dev/pool"] == "vela"
        mounts = {m["mountPath"]: m for m in container(pod)["volumeMounts"]}
        paths = example["spec"]["workload"]["pretrain"]["data"]["paths"]
        assert all(Path(p).parent.as_posix() in mounts for p in paths)
        assert container(pod)["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
        assert pod["metadata"]["labels"]["team"] == "research"
    finally:
        k8s_cluster.kubectl("delete", "pv", volume, "--wait=false", check=False)
