"""The operator places gangs on the nodes its cache holds, counting the workers it watches."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from builders import make_job
from test_reconcile import KEY, reconcile, setup, status

from carina.operators.runtime.cache import Cache
from carina.operators.runtime.settings import Settings, SettingsError
from carina.operators.trainingjob.topology import Topology, needs_placement
from carina.platform.api.types import TopologyPlacement, TrainingJob
from carina.platform.planning.nodes import node_info
from carina.platform.planning.observed import INDEX_LABEL, JOB_LABEL, RESTART_LABEL, ObservedWorker
from carina.platform.planning.placement import DEFAULT_LEVELS

SU = "carina.dev/scalable-unit"
GPU = "nvidia.com/gpu"
REQUIRED = {"level": SU, "mode": "Required"}
GANG = {"cluster": "blue-vela", "resources": {"gpus": 8, "cpu": "4"}, "topology": REQUIRED}


def node(name: str, su: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"carina.dev/pool": "blue-vela", SU: su}},
        "spec": {"taints": [{"key": GPU, "value": "present", "effect": "NoSchedule"}]},
        "status": {
            "allocatable": {
                "cpu": "96",
                "memory": "1Ti",
                "pods": "110",
                GPU: "8",
                "rdma/rdma_shared_device_ib": "64",
            },
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def nodes(cache: Cache, **units: int) -> None:
    """`units`: how many nodes each scalable unit has (su_0=2 is su-0 with two nodes)."""
    for unit, count in units.items():
        su = unit.replace("_", "-")
        for i in range(count):
            cache.put_node(node(f"{su}-n{i}", su))


def other_job(cache: Cache, name: str, placement: dict[str, str] | None = None) -> None:
    body = dict(make_job(name).with_spec(replicas=2, **GANG))
    body["metadata"].update(namespace="ns", uid=f"uid-{name}", generation=1)
    if placement is not None:
        body["status"] = {"placement": placement}
    cache.put_job(body)


def worker_pod(job: str, index: int, node: str | None, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{job}-worker-{index}-r0",
            "namespace": "ns",
            "uid": f"uid-{job}-{index}",
            "resourceVersion": "1",
            "labels": {JOB_LABEL: job, INDEX_LABEL: str(index), RESTART_LABEL: "0"},
        },
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase},
    }


def created_pods(kube) -> list[dict[str, Any]]:
    return [o for (kind, _), o in kube.objects.items() if kind == "Pod"]


def pinned_to(pod: dict[str, Any]) -> list[str]:
    required = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    [term] = required["nodeSelectorTerms"]
    return [v for e in term["matchExpressions"] if e["key"] == SU for v in e["values"]]


# -- the reconciler ---------------------------------------------------------------------------


def test_a_new_gang_is_pinned_to_the_unit_with_room_and_status_says_which():
    kube, rec = setup(replicas=2, **GANG)
    nodes(rec.cache, su_0=1, su_1=2)
    reconcile(rec)
    assert status(kube)["placement"] == {"level": SU, "domain": "su-1"}
    pods = created_pods(kube)
    assert len(pods) == 2
    assert all(pinned_to(p) == ["su-1"] for p in pods)


def test_a_gang_without_room_gets_no_workers_and_waits_with_the_reason():
    kube, rec = setup(replicas=3, **GANG)
    nodes(rec.cache, su_0=2, su_1=3)
    other_job(rec.cache, "other")
    rec.cache.put_pod(worker_pod("other", 0, "su-1-n0"))
    reconcile(rec)
    assert created_pods(kube) == []
    admitted = next(c for c in status(kube)["conditions"] if c["type"] == "Admitted")
    assert (admitted["reason"], admitted["message"]) == (
        "NoTopologyDomain",
        f"no {SU} has room for 3 workers x 8 GPUs; the most any has is 2 (su-0)",
    )
    assert status(kube)["phase"] == "Queued"
    assert ("event", "NoTopologyDomain") in kube.calls


def test_a_gang_without_a_topology_is_created_unpinned():
    kube, rec = setup(replicas=2, cluster="vela", resources={"gpus": 8})
    reconcile(rec)
    assert "placement" not in kube.objects[("TrainingJob", "llm")].get("status", {})
    assert all(pinned_to(p) == [] for p in created_pods(kube))


# -- what the other gangs hold ------------------------------------------------------------------


def place(cache: Cache, replicas: int = 2) -> TopologyPlacement | None:
    body = dict(make_job("llm").with_spec(replicas=replicas, **GANG))
    body["metadata"].update(namespace="ns", uid="uid-llm", generation=1)
    cache.put_job(copy.deepcopy(body))
    job = TrainingJob.parse(body)
    return Topology(cache, DEFAULT_LEVELS).place(KEY, job, []).placement


def test_running_workers_of_other_gangs_take_their_nodes():
    cache = Cache()
    nodes(cache, su_0=2, su_1=3)
    other_job(cache, "other")
    cache.put_pod(worker_pod("other", 0, "su-0-n0"))
    assert place(cache).domain == "su-1"


def test_finished_workers_of_other_gangs_hold_nothing():
    cache = Cache()
    nodes(cache, su_0=2, su_1=3)
    other_job(cache, "other")
    cache.put_pod(worker_pod("other", 0, "su-0-n0", phase="Succeeded"))
    assert place(cache).domain == "su-0"


def test_the_gangs_own_workers_count_as_free():
    cache = Cache()
    nodes(cache, su_0=2, su_1=3)
    cache.put_pod(worker_pod("llm", 0, "su-0-n0", phase="Pending"))
    assert place(cache).domain == "su-0"


def test_unscheduled_workers_of_a_pinned_gang_take_room_in_its_unit():
    cache = Cache()
    nodes(cache, su_0=2, su_1=3)
    other_job(cache, "other", placement={"level": SU, "domain": "su-0"})
    cache.put_pod(worker_pod("other", 0, None, phase="Pending"))
    assert place(cache).domain == "su-1"


# -- when a gang is placed --------------------------------------------------------------------


def worker(index: int, phase: str, restart: int = 0) -> ObservedWorker:
    return ObservedWorker(index=index, phase=phase, ready=phase == "Running", restart=restart)  # type: ignore[arg-type]


def gang(**status: Any) -> TrainingJob:
    manifest = make_job("llm").with_spec(replicas=2, **GANG)
    if status:
        manifest["status"] = status
    return TrainingJob.parse(manifest)


NEEDS = {
    "a new gang": (gang(), [], True),
    "a gang missing a worker of its generation": (gang(), [worker(0, "Pending")], True),
    "a restarted gang whose old workers are gone": (
        gang(restarts=1),
        [worker(0, "Failed"), worker(1, "Succeeded")],
        True,
    ),
    "a gang whose workers all live": (gang(), [worker(0, "Running"), worker(1, "Pending")], False),
    "a finished gang": (gang(phase="Succeeded"), [], False),
    "a suspended gang": (TrainingJob.parse(make_job().with_spec(suspend=True, **GANG)), [], False),
    "a gang asking for no topology": (TrainingJob.parse(make_job()), [], False),
}


@pytest.mark.parametrize("case", list(NEEDS))
def test_only_a_gang_about_to_get_workers_is_placed(case):
    job, workers, expected = NEEDS[case]
    assert needs_placement(job, workers) is expected


# -- settings -----------------------------------------------------------------------------------


def test_topology_levels_are_configured_outermost_first():
    assert Settings().topology_levels == (
        "carina.dev/block",
        SU,
        "carina.dev/rack",
        "kubernetes.io/hostname",
    )
    s = Settings.from_env({"CARINA_OPERATOR_TOPOLOGY_LEVELS": "example.com/pod, example.com/rack"})
    assert s.topology_levels == ("example.com/pod", "example.com/rack")


def test_a_topology_level_that_is_no_label_key_is_refused_naming_the_variable():
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"CARINA_OPERATOR_TOPOLOGY_LEVELS": "Example.com/pod"})
    assert "CARINA_OPERATOR_TOPOLOGY_LEVELS" in str(info.value)
    assert "'Example.com/pod' is not a node label key" in str(info.value)


def test_node_info_reads_what_placement_needs():
    info = node_info(node("su-0-n0", "su-0"))
    assert info.usable
    assert info.allocatable[GPU] == 8.0
