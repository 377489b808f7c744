"""The test control plane behaves like a cluster of GPU nodes: real scheduling, kwok-run pods."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from carina.testcluster import (
    BLUE_VELA,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    GPU_TAINT,
    POOL_LABEL,
    RDMA_RESOURCE,
    SCALABLE_UNIT_LABEL,
    SIMULATE_EXIT_CODE_ANNOTATION,
    SIMULATE_EXIT_MESSAGE_ANNOTATION,
    VELA,
    NodePool,
    TestCluster,
)
from carina.testcluster.binaries import tool_version
from carina.testcluster.processes import wait_until

pytestmark = pytest.mark.k8s

GPU_TOLERATION = {"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}


def gpu_pod(
    name: str,
    gpus: int,
    pool: str | None = None,
    extra: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A worker-like pod asking for `gpus` GPUs (and `extra` resources), pinned to `pool`."""
    limits = {GPU_RESOURCE: str(gpus), **(extra or {})} if gpus or extra else {}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "tolerations": [GPU_TOLERATION],
        "containers": [
            {
                "name": "worker",
                "image": "carina/worker:test",
                "resources": {"limits": limits, "requests": limits},
            }
        ],
    }
    if pool:
        spec["nodeSelector"] = {POOL_LABEL: pool}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": spec,
    }


def create(cluster: TestCluster, namespace: str, obj: dict[str, Any]) -> None:
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj))


def get_pod(cluster: TestCluster, namespace: str, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = cluster.get_json("pod", name, "-n", namespace)
    return pod


def wait_for_phase(
    cluster: TestCluster, namespace: str, name: str, phase: str, timeout: float = 30
) -> dict[str, Any]:
    pod: dict[str, Any] = {}

    def reached() -> bool:
        nonlocal pod
        pod = get_pod(cluster, namespace, name)
        return bool(pod.get("status", {}).get("phase") == phase)

    wait_until(reached, timeout, f"pod {name} to be {phase}")
    return pod


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def test_apiserver_reports_the_pinned_kubernetes_release(k8s_cluster: TestCluster) -> None:
    version = json.loads(k8s_cluster.kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"] == tool_version("kubernetes")


def test_pools_expose_gpus_labels_and_taints(k8s_cluster: TestCluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in k8s_cluster.get_json("nodes")["items"]}
    vela, blue = nodes["vela-0"], nodes["blue-vela-0"]
    assert vela["status"]["allocatable"][GPU_RESOURCE] == "8"
    assert vela["metadata"]["labels"][GPU_PRODUCT_LABEL] == VELA.gpu_product
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in (
        vela["spec"]["taints"]
    )
    assert blue["metadata"]["labels"][GPU_PRODUCT_LABEL] == BLUE_VELA.gpu_product
    assert blue["status"]["allocatable"][RDMA_RESOURCE] == BLUE_VELA.extended[RDMA_RESOURCE]
    assert blue["metadata"]["labels"][SCALABLE_UNIT_LABEL] == "su-0"
    assert all(condition(n, "Ready")["status"] == "True" for n in nodes.values())  # type: ignore[index]


@pytest.mark.parametrize(("pool", "extra"), [("vela", None), ("blue-vela", {RDMA_RESOURCE: "1"})])
def test_gpu_pod_is_bound_to_its_pool_and_runs(
    k8s_cluster: TestCluster, namespace: str, pool: str, extra: dict[str, str] | None
) -> None:
    create(k8s_cluster, namespace, gpu_pod("worker-0", gpus=8, pool=pool, extra=extra))
    pod = wait_for_phase(k8s_cluster, namespace, "worker-0", "Running")
    assert pod["spec"]["nodeName"].startswith(f"{pool}-")
    assert condition(pod, "Ready")["status"] == "True"  # type: ignore[index]


def test_pod_wanting_more_gpus_than_any_node_stays_pending(
    k8s_cluster: TestCluster, namespace: str
) -> None:
    create(k8s_cluster, namespace, gpu_pod("too-big", gpus=9))
    pod: dict[str, Any] = {}

    def unschedulable() -> bool:
        nonlocal pod
        pod = get_pod(k8s_cluster, namespace, "too-big")
        scheduled = condition(pod, "PodScheduled")
        return scheduled is not None and scheduled["reason"] == "Unschedulable"

    wait_until(unschedulable, 30, "the scheduler to give up on too-big")
    assert pod["status"]["phase"] == "Pending"
    assert condition(pod, "PodScheduled")["status"] == "False"  # type: ignore[index]
    assert "Insufficient nvidia.com/gpu" in condition(pod, "PodScheduled")["message"]  # type: ignore[index]


@pytest.mark.parametrize(("code", "phase"), [(3, "Failed"), (0, "Succeeded")])
def test_simulated_exit_gives_the_requested_code(
    k8s_cluster: TestCluster, namespace: str, code: int, phase: str
) -> None:
    message = json.dumps({"checkpoint": {"step": 42, "uri": "s3://ckpt/job/42"}})
    create(
        k8s_cluster,
        namespace,
        gpu_pod(
            "worker-0",
            gpus=1,
            pool="vela",
            annotations={
                SIMULATE_EXIT_CODE_ANNOTATION: str(code),
                SIMULATE_EXIT_MESSAGE_ANNOTATION: message,
            },
        ),
    )
    pod = wait_for_phase(k8s_cluster, namespace, "worker-0", phase)
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == code
    assert json.loads(terminated["message"]) == json.loads(message)


def test_job_pods_complete_through_the_controller_manager(
    k8s_cluster: TestCluster, namespace: str
) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}],
                }
            },
        },
    }
    create(k8s_cluster, namespace, job)

    def complete() -> bool:
        got = k8s_cluster.get_json("job", "once", "-n", namespace)
        done = condition(got, "Complete")
        return done is not None and done["status"] == "True"

    wait_until(complete, 60, "job once to complete")


def test_node_can_be_made_not_ready_and_ready_again(k8s_cluster: TestCluster) -> None:
    # A node of its own: the shared pools must stay Ready for the other tests.
    pool = NodePool(name=f"flaky-{uuid.uuid4().hex[:6]}", size=1)
    [node] = k8s_cluster.create_pools([pool])
    try:
        k8s_cluster.set_node_ready(node, False)
        wait_until(
            lambda: (
                condition(k8s_cluster.get_json("node", node), "Ready")["status"]  # type: ignore[index]
                == "False"
            ),
            30,
            f"{node} to be NotReady",
        )
        k8s_cluster.set_node_ready(node, True)
        wait_until(
            lambda: (
                condition(k8s_cluster.get_json("node", node), "Ready")["status"]  # type: ignore[index]
                == "True"
            ),
            30,
            f"{node} to be Ready again",
        )
    finally:
        k8s_cluster.kubectl("delete", "node", node, "--wait=false", check=False)


def test_annotating_a_running_pod_makes_it_exit(k8s_cluster: TestCluster, namespace: str) -> None:
    # The operator creates worker pods; a test injects the failure afterwards.
    create(k8s_cluster, namespace, gpu_pod("worker-0", gpus=8, pool="blue-vela"))
    wait_for_phase(k8s_cluster, namespace, "worker-0", "Running")
    k8s_cluster.kubectl(
        "annotate", "pod", "worker-0", "-n", namespace, f"{SIMULATE_EXIT_CODE_ANNOTATION}=137"
    )
    pod = wait_for_phase(k8s_cluster, namespace, "worker-0", "Failed")
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137
