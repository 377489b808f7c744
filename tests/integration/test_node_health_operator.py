"""The operator acts on node health, on a real control plane with kwok's fake GPU nodes.

A node's verdict is what the health agent writes (labels and the CarinaHealthy condition): the
agent itself, run on the host for a kwok node with a fault file, or a test writing the labels.
The operator keeps new workers off WARN and EVICT nodes, moves a running gang off a node gone
EVICT (SIGTERM: rank 0 saves and says so; the restart is
infrastructure's), taints the node, and returns it once it passes again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_health_agent import remove_condition, run_once
from test_operator import (
    TIMEOUT,
    apply,
    condition,
    gpu_job,
    job_status,
    pods,
    running_pods,
    wait_phase,
)

from carina.platform.api.health import (
    CHECK_REQUESTED_ANNOTATION,
    FULL_PASS_LABEL,
    HEALTH_CHECK_LABEL,
    HEALTH_LABEL,
    UNHEALTHY_TAINT_KEY,
)
from carina.testcluster import SIMULATE_SIGTERM_MESSAGE_ANNOTATION, TestCluster
from carina.testcluster.processes import wait_until

pytestmark = pytest.mark.k8s

VELA_NODES = ("vela-0", "vela-1")


def set_verdict(cluster: TestCluster, node: str, health: str | None, check: str = "") -> None:
    """Write a node's verdict as the health agent does (None takes it off)."""
    if health is None:
        cluster.kubectl("label", "node", node, f"{HEALTH_LABEL}-", f"{HEALTH_CHECK_LABEL}-")
        return
    cluster.kubectl(
        "label", "node", node, "--overwrite", f"{HEALTH_LABEL}={health}",
        f"{HEALTH_CHECK_LABEL}={check}",
    )  # fmt: skip


def taint_keys(cluster: TestCluster, node: str) -> set[str]:
    return {t["key"] for t in cluster.get_json("node", node)["spec"].get("taints") or []}


@pytest.fixture
def vela_nodes(k8s_cluster: TestCluster) -> Iterator[tuple[str, ...]]:
    """The Vela pool's nodes, given back unlabelled and untainted whatever the test did."""
    try:
        yield VELA_NODES
    finally:
        for node in VELA_NODES:
            set_verdict(k8s_cluster, node, None)
            k8s_cluster.kubectl("label", "node", node, f"{FULL_PASS_LABEL}-")
            k8s_cluster.kubectl("annotate", "node", node, f"{CHECK_REQUESTED_ANNOTATION}-")
            remove_condition(k8s_cluster, node)
            if UNHEALTHY_TAINT_KEY in taint_keys(k8s_cluster, node):
                k8s_cluster.kubectl("taint", "node", node, f"{UNHEALTHY_TAINT_KEY}-")


@pytest.mark.usefixtures("vela_nodes")
def test_a_gang_on_a_node_gone_evict_saves_moves_and_the_node_returns_after_passing(
    k8s_cluster, namespace, operator, tmp_path
):
    apply(k8s_cluster, gpu_job("llm", namespace, replicas=1, failurePolicy={"maxRestarts": 0}))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    [worker] = pods(k8s_cluster, namespace, "llm")
    bad = worker["spec"]["nodeName"]
    # Rank 0's answer to SIGTERM: it saved step 120 before leaving.
    said = json.dumps({"step": 120, "checkpoint": {"step": 120, "uri": "s3://c/llm/step-120"}})
    k8s_cluster.kubectl(
        "annotate", "pod", worker["metadata"]["name"], "-n", namespace,
        f"{SIMULATE_SIGTERM_MESSAGE_ANNOTATION}={said}",
    )  # fmt: skip

    # The health agent finds two uncorrectable ECC errors (a drill: its fault file).
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"gpu-ecc": {"result": "EVICT", "message": "GPU 3: 2 DBE"}}))
    run_once(k8s_cluster, "--fault-file", str(faults), node=bad)

    # The gang restarts elsewhere; maxRestarts 0 does not stop it: not the user's fault.
    status = wait_phase(k8s_cluster, namespace, "llm", "Running", operator, restarts=1)
    assert status["restartsByReason"] == {"application": 0, "infrastructure": 1, "preemption": 0}
    assert status["lastCheckpoint"]["step"] == 120  # it resumes where it saved
    [moved] = running_pods(k8s_cluster, namespace, "llm", 1)
    assert moved["spec"]["nodeName"] != bad
    events = k8s_cluster.get_json("events", "-n", namespace)["items"]
    [told] = [e for e in events if e["reason"] == "NodeUnhealthy"]
    assert told["type"] == "Warning"
    assert f"node {bad} is EVICT" in told["message"]
    assert "GPU 3: 2 DBE" in told["message"]  # the agent's words reach the job

    # Nothing else lands there either, until the node passes its checks again.
    wait_until(lambda: UNHEALTHY_TAINT_KEY in taint_keys(k8s_cluster, bad), TIMEOUT, "taint")
    faults.unlink()  # repaired: the agent's next round passes
    run_once(k8s_cluster, "--fault-file", str(faults), node=bad)
    wait_until(lambda: UNHEALTHY_TAINT_KEY not in taint_keys(k8s_cluster, bad), TIMEOUT, "untaint")


def test_new_workers_avoid_a_degraded_node(k8s_cluster, namespace, operator, vela_nodes):
    warn, good = vela_nodes
    set_verdict(k8s_cluster, warn, "WARN", "pcie-link")
    apply(k8s_cluster, gpu_job("llm", namespace, replicas=1))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    [worker] = pods(k8s_cluster, namespace, "llm")
    assert worker["spec"]["nodeName"] == good
    # A degraded node keeps its running work and takes no taint: only new workers avoid it.
    assert UNHEALTHY_TAINT_KEY not in taint_keys(k8s_cluster, warn)


def _gated(namespace: str, **spec: Any) -> dict[str, Any]:
    return gpu_job("big", namespace, replicas=2, preflight={"required": True}, **spec)


def test_a_preflight_gated_gang_waits_for_checked_nodes_and_asks_for_the_checks(
    k8s_cluster, namespace, operator, vela_nodes
):
    apply(k8s_cluster, _gated(namespace))

    def waiting() -> dict[str, Any] | None:
        status = job_status(k8s_cluster, namespace, "big")
        admitted = [c for c in status.get("conditions", []) if c["type"] == "Admitted"]
        return status if admitted and admitted[0]["reason"] == "PreflightPending" else None

    wait_until(waiting, TIMEOUT, "waiting on its preflight", alive=operator._alive)
    status = waiting()
    assert status is not None
    assert "2 node(s)" in condition(status, "Admitted")["message"]
    assert pods(k8s_cluster, namespace, "big") == []
    # The operator asked the health agent to check both Vela nodes.
    for node in vela_nodes:
        wait_until(
            lambda node=node: (
                CHECK_REQUESTED_ANNOTATION
                in (k8s_cluster.get_json("node", node)["metadata"].get("annotations") or {})
            ),
            TIMEOUT,
            f"check requested on {node}",
        )

    # The agent's full checks pass on both: the gang starts, on those nodes only.
    for node in vela_nodes:
        k8s_cluster.kubectl(
            "label", "node", node, "--overwrite", f"{HEALTH_LABEL}=PASS",
            f"{FULL_PASS_LABEL}={int(time.time())}",
        )  # fmt: skip
    wait_phase(k8s_cluster, namespace, "big", "Running", operator, timeout=TIMEOUT)
    for pod in pods(k8s_cluster, namespace, "big"):
        terms = pod["spec"]["affinity"]["nodeAffinity"]
        required = terms["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert any(e["key"] == FULL_PASS_LABEL for e in required[0]["matchExpressions"])
