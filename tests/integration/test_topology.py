"""Topology placement on a real control plane: a gang stays inside one Blue Vela scalable unit.

The operator runs as a process against kube-apiserver, the scheduler and kwok's fake H100
nodes. The session's pools hold two blue-vela nodes in scalable unit su-0; each test adds
blue-vela nodes of its own, in units of its own (distinct carina.dev/scalable-unit values),
and deletes them when it ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from test_operator import (
    TIMEOUT,
    apply,
    condition,
    exit_worker,
    gpu_job,
    pods,
    running_pods,
    wait_phase,
)

from carina.testcluster import BLUE_VELA, POOL_LABEL, SCALABLE_UNIT_LABEL, TestCluster
from carina.testcluster.processes import wait_until

pytestmark = pytest.mark.k8s

SU = SCALABLE_UNIT_LABEL
REQUIRED = {"level": SU, "mode": "Required"}


class Units:
    """Blue Vela nodes a test adds, in scalable units of its own; all deleted at the end."""

    def __init__(self, cluster: TestCluster) -> None:
        self.cluster = cluster
        self.tag = uuid.uuid4().hex[:6]
        self.nodes: list[str] = []

    def name(self, unit: str) -> str:
        """The label value of the test's unit `unit` (unique in the session)."""
        return f"{unit}-{self.tag}"

    def add(self, unit: str, count: int) -> list[str]:
        """`count` blue-vela nodes in scalable unit `unit`, Ready; their names."""
        pool = replace(
            BLUE_VELA,
            name=f"bv-{unit}-{self.tag}",
            size=count,
            labels={POOL_LABEL: BLUE_VELA.name, SU: self.name(unit)},
            nodes_per_su=0,  # the label above, not one per 32 nodes
        )
        names = self.cluster.create_pools([pool])
        self.nodes += names
        return names

    def delete(self, *names: str) -> None:
        self.cluster.kubectl("delete", "node", *names, "--wait=true", check=False)
        self.nodes = [n for n in self.nodes if n not in names]

    def unit_of(self, node: str) -> str:
        return self.cluster.get_json("node", node)["metadata"]["labels"].get(SU, "")


@pytest.fixture
def units(k8s_cluster: TestCluster) -> Iterator[Units]:
    made = Units(k8s_cluster)
    try:
        yield made
    finally:
        if made.nodes:
            made.delete(*made.nodes)


def placement(cluster: TestCluster, ns: str, name: str) -> dict[str, Any] | None:
    status = cluster.get_json("trainingjob", name, "-n", ns).get("status") or {}
    return status.get("placement")


def required_expressions(pod: dict[str, Any]) -> list[dict[str, Any]]:
    affinity = pod["spec"]["affinity"]["nodeAffinity"]
    [term] = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return list(term["matchExpressions"])


def assert_all_in(units: Units, workers: list[dict[str, Any]], unit: str) -> None:
    """Every worker runs on a node of `unit` and requires it."""
    pin = {"key": SU, "operator": "In", "values": [unit]}
    for pod in workers:
        assert units.unit_of(pod["spec"]["nodeName"]) == unit, pod["metadata"]["name"]
        assert pin in required_expressions(pod)


# -- tests ----------------------------------------------------------------------------------


def test_a_gang_requiring_one_unit_runs_inside_one_and_a_restart_keeps_it_there(
    k8s_cluster, namespace, units, operator
):
    # su-0 (the session's 2 nodes) cannot hold 3 workers; of the two that can, the fuller
    # one is taken (best fit), so the 5-node unit stays whole for a bigger gang.
    big = units.add("su-m", 5)
    units.add("su-z", 3)
    apply(k8s_cluster, gpu_job("llm", namespace, "blue-vela", replicas=3, topology=REQUIRED))
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    chosen = units.name("su-z")
    assert placement(k8s_cluster, namespace, "llm") == {"level": SU, "domain": chosen}
    assert_all_in(units, running_pods(k8s_cluster, namespace, "llm", 0), chosen)

    # Now su-m would be chosen afresh (as full as su-z, and first by name); the restarted
    # gang keeps its unit, which still has room once its own workers are gone.
    units.delete(*big[3:])
    exit_worker(k8s_cluster, namespace, "llm-worker-1-r0", 1)
    wait_phase(k8s_cluster, namespace, "llm", "Running", operator, restarts=1)
    assert placement(k8s_cluster, namespace, "llm") == {"level": SU, "domain": chosen}
    restarted = running_pods(k8s_cluster, namespace, "llm", 1)
    assert len(restarted) == 3
    assert_all_in(units, restarted, chosen)


def test_a_gang_no_unit_has_room_for_waits_saying_so_and_starts_once_room_appears(
    k8s_cluster, namespace, units, operator
):
    [held, *_] = units.add("su-a", 3)
    # Another gang holds one node of su-a: each unit has 2 free nodes, the gang needs 3.
    blocker = gpu_job(
        "blocker",
        namespace,
        "blue-vela",
        replicas=1,
        template={"spec": {"nodeSelector": {"kubernetes.io/hostname": held}}},
    )
    apply(k8s_cluster, blocker)
    wait_phase(k8s_cluster, namespace, "blocker", "Running", operator)

    apply(k8s_cluster, gpu_job("llm", namespace, "blue-vela", replicas=3, topology=REQUIRED))
    status = wait_phase(k8s_cluster, namespace, "llm", "Queued", operator)
    admitted = condition(status, "Admitted")
    why = f"no {SU} has room for 3 workers x 8 GPUs; the most any has is 2 (su-0)"
    assert (admitted["status"], admitted["reason"], admitted["message"]) == (
        "False",
        "NoTopologyDomain",
        why,
    )
    assert not pods(k8s_cluster, namespace, "llm")
    events = k8s_cluster.get_json("events", "-n", namespace)["items"]
    assert any(
        e["reason"] == "NoTopologyDomain" and e["type"] == "Warning" and e["message"] == why
        for e in events
    )

    k8s_cluster.kubectl("delete", "trainingjob", "blocker", "-n", namespace)
    wait_until(lambda: not pods(k8s_cluster, namespace, "blocker"), TIMEOUT, "blocker gone")
    status = wait_phase(k8s_cluster, namespace, "llm", "Running", operator)
    assert condition(status, "Admitted")["status"] == "True"
    assert_all_in(units, running_pods(k8s_cluster, namespace, "llm", 0), units.name("su-a"))


def test_a_level_the_operator_is_not_configured_with_leaves_the_job_pending(
    k8s_cluster, namespace, operator
):
    job = gpu_job("llm", namespace, "blue-vela", topology={"level": "example.com/pod"})
    apply(k8s_cluster, job)
    status = wait_phase(k8s_cluster, namespace, "llm", "Pending", operator)
    admitted = condition(status, "Admitted")
    assert admitted["reason"] == "UnknownTopologyLevel"
    assert admitted["message"] == (
        "spec.topology.level example.com/pod is not a topology level of this operator (it knows:"
        " carina.dev/block, carina.dev/scalable-unit, carina.dev/rack, kubernetes.io/hostname)"
    )
    assert not pods(k8s_cluster, namespace, "llm")
