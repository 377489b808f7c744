"""Topology placement: which domain a gang is pinned to, or why it waits, table by table."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from builders import make_job

from carina.platform.api.reasons import QueueReason, Reason
from carina.platform.api.types import TopologyPlacement, TrainingJob
from carina.platform.planning import placement
from carina.platform.planning.engine import ADMITTED, JobAdmission
from carina.platform.planning.nodes import NodeInfo
from carina.platform.planning.placement import (
    DEFAULT_LEVELS,
    UNPINNED,
    Domain,
    PodLoad,
    admit,
    choose,
    describe_gang,
    free_by_node,
    place,
    pod_requests,
    pods_fitting,
)
from carina.testcluster import pools

SU = "carina.dev/scalable-unit"
RACK = "carina.dev/rack"
GPU = "nvidia.com/gpu"
RDMA = "rdma/rdma_shared_device_ib"
GPU_TAINT = {"key": GPU, "value": "present", "effect": "NoSchedule"}


def node(
    name: str,
    su: str | None = None,
    pool: str = "blue-vela",
    gpus: int = 8,
    rdma: int = 64,
    taints: tuple = (GPU_TAINT,),
    **kw,
) -> NodeInfo:
    labels = {"carina.dev/pool": pool, "kubernetes.io/hostname": name}
    labels |= kw.pop("labels", {})
    if su is not None:
        labels[SU] = su
    allocatable = {"cpu": 96.0, "memory": float(2**40), "pods": 110.0, GPU: float(gpus)}
    if rdma:
        allocatable[RDMA] = float(rdma)
    return NodeInfo(
        name=name,
        labels=MappingProxyType(labels),
        allocatable=MappingProxyType(allocatable),
        taints=tuple(MappingProxyType(t) for t in taints),
        **kw,
    )


def su_nodes(su: str, count: int, **kw) -> list[NodeInfo]:
    return [node(f"{su}-n{i}", su, **kw) for i in range(count)]


def gang(replicas: int = 4, gpus: int = 8, cluster: str = "blue-vela", **spec) -> TrainingJob:
    resources = {"gpus": gpus, "cpu": "4", "memory": "16Gi"} if gpus else {"cpu": "4"}
    manifest = make_job("llm").with_spec(
        replicas=replicas, cluster=cluster, resources=resources, **spec
    )
    manifest["metadata"].update(namespace="ns", uid="u1", generation=1)
    return TrainingJob.parse(manifest)


def required(level: str = SU) -> dict:
    return {"level": level, "mode": "Required"}


def busy(node_name: str, gpus: int = 8) -> PodLoad:
    """Another gang's scheduled worker holding `gpus` GPUs of `node_name`."""
    return PodLoad({"cpu": 1.0, "pods": 1.0, GPU: float(gpus)}, node_name)


def with_placement(job: TrainingJob, domain: str) -> TrainingJob:
    wire = job.to_wire()
    wire["status"] = {"placement": {"level": SU, "domain": domain}}
    return TrainingJob.parse(wire)


# -- how many workers a node takes ---------------------------------------------------------

FITTING = {
    "an empty 8-GPU node takes one 8-GPU worker": ({GPU: 8, "cpu": 96}, {GPU: 8, "cpu": 4}, 1),
    "an empty 8-GPU node takes two 4-GPU workers": ({GPU: 8, "cpu": 96}, {GPU: 4, "cpu": 4}, 2),
    "the scarcest resource decides": ({GPU: 8, "cpu": 6}, {GPU: 2, "cpu": 4}, 1),
    "half a node's GPUs take no 8-GPU worker": ({GPU: 4, "cpu": 96}, {GPU: 8, "cpu": 4}, 0),
    "a resource the node lacks takes none": ({GPU: 8}, {GPU: 8, RDMA: 1}, 0),
    "fractions of a core add up exactly": ({"cpu": 0.3}, {"cpu": 0.1}, 3),
    "overcommitted is none, not negative": ({GPU: -8}, {GPU: 8}, 0),
}


@pytest.mark.parametrize("case", list(FITTING))
def test_a_node_takes_only_whole_workers(case):
    free, requests, expected = FITTING[case]
    assert pods_fitting(free, requests) == expected


def test_a_worker_requests_what_the_pod_renders_plus_one_pod_slot():
    assert pod_requests(gang(gpus=8)) == {
        "cpu": 4.0,
        "memory": 16 * 2**30,
        "pods": 1.0,
        GPU: 8.0,
        RDMA: 1.0,  # the Blue Vela profile's InfiniBand device
    }


# -- choosing among domains ------------------------------------------------------------------

CHOICES = {
    "the only domain with room": (
        [Domain("su-0", 2, 16), Domain("su-1", 4, 32)],
        None,
        "su-1",
    ),
    "best fit: the fewest free GPUs, so big domains stay whole": (
        [Domain("su-0", 8, 64), Domain("su-1", 4, 32)],
        None,
        "su-1",
    ),
    "ties by name": ([Domain("su-b", 4, 32), Domain("su-a", 4, 32)], None, "su-a"),
    "a restarted gang keeps its domain while it has room": (
        [Domain("su-0", 8, 64), Domain("su-1", 4, 32)],
        "su-0",
        "su-0",
    ),
    "its old domain full, a restarted gang moves": (
        [Domain("su-0", 3, 24), Domain("su-1", 4, 32)],
        "su-0",
        "su-1",
    ),
    "no domain with room": ([Domain("su-0", 3, 24), Domain("su-1", 2, 16)], None, None),
}


@pytest.mark.parametrize("case", list(CHOICES))
def test_choose_a_domain(case):
    candidates, previous, expected = CHOICES[case]
    chosen = choose({d.name: d for d in candidates}, replicas=4, previous=previous)
    assert (chosen.name if chosen else None) == expected


# -- placing a gang ---------------------------------------------------------------------------


def test_a_gang_goes_to_the_scalable_unit_with_room_for_all_of_it():
    nodes = su_nodes("su-0", 4) + su_nodes("su-1", 4)
    loads = [busy("su-0-n0"), busy("su-0-n1")]  # su-0 has 2 free nodes, su-1 has 4
    decision = place(gang(4, topology=required()), nodes, loads, DEFAULT_LEVELS)
    assert decision.placement == TopologyPlacement(level=SU, domain="su-1")
    assert decision.waiting is None


def test_of_two_units_with_room_the_fuller_one_is_taken():
    nodes = su_nodes("su-0", 8) + su_nodes("su-1", 8)
    loads = [busy(f"su-1-n{i}") for i in range(3)]
    decision = place(gang(4, topology=required()), nodes, loads, DEFAULT_LEVELS)
    assert decision.placement.domain == "su-1"


def test_free_gpus_scattered_over_nodes_do_not_make_room_for_a_whole_worker():
    nodes = su_nodes("su-0", 4)
    loads = [busy(n.name, gpus=4) for n in nodes]  # 16 GPUs free, no node with 8
    decision = place(gang(2, topology=required()), nodes, loads, DEFAULT_LEVELS)
    assert decision.placement is None
    assert decision.waiting == (
        f"no {SU} has room for 2 workers x 8 GPUs; the most any has is 0 (su-0)"
    )
    assert decision.reason == Reason.NO_TOPOLOGY_DOMAIN
    assert decision.never_fits is False  # it fits once the other gang leaves


def test_no_room_anywhere_says_how_much_the_roomiest_unit_has():
    nodes = su_nodes("su-0", 4) + su_nodes("su-1", 4)
    loads = [busy(f"su-{u}-n{i}") for u in (0, 1) for i in range(2)]
    loads.append(busy("su-0-n2"))
    decision = place(gang(4, topology=required()), nodes, loads, DEFAULT_LEVELS)
    assert decision.waiting == (
        f"no {SU} has room for 4 workers x 8 GPUs; the most any has is 2 (su-1)"
    )


def test_a_gang_larger_than_any_unit_never_fits():
    nodes = su_nodes("su-0", 2) + su_nodes("su-1", 2)
    decision = place(gang(3, topology=required()), nodes, [], DEFAULT_LEVELS)
    assert decision.never_fits is True
    assert decision.waiting == (
        f"no {SU} can hold 3 workers x 8 GPUs even when empty; the largest holds 2 (su-0)"
    )


@pytest.mark.parametrize(
    "unusable",
    [
        {"labels": {"carina.dev/health": "WARN"}},
        {"labels": {"carina.dev/health": "EVICT"}},
        {"unschedulable": True},
        {"ready": False},
    ],
    ids=["warn", "evict", "cordoned", "not-ready"],
)
def test_nodes_no_worker_may_land_on_give_no_room(unusable):
    nodes = [*su_nodes("su-0", 1), node("su-0-bad", "su-0", **unusable)]
    decision = place(gang(2, topology=required()), nodes, [], DEFAULT_LEVELS)
    assert decision.placement is None
    assert "the largest holds 1 (su-0)" in decision.waiting


def test_only_nodes_of_the_profiles_pool_count():
    nodes = [*su_nodes("su-0", 1), node("vela-0", "su-0", pool="vela")]
    decision = place(gang(2, topology=required()), nodes, [], DEFAULT_LEVELS)
    assert decision.placement is None


def test_nodes_without_the_label_mean_the_gang_waits_for_one():
    decision = place(gang(2, topology=required()), [node("bv-0"), node("bv-1")], [], DEFAULT_LEVELS)
    assert decision.never_fits is True
    assert decision.waiting == (
        f"no usable node with carina.dev/pool=blue-vela the workers tolerate carries {SU};"
        " 2 workers x 8 GPUs wait for one"
    )


def test_a_worker_without_gpus_is_not_placed_on_tainted_gpu_nodes():
    nodes = [
        node("gpu-0", labels={RACK: "r0"}),
        node("cpu-0", gpus=0, taints=(), labels={RACK: "r1"}),
        node("cpu-1", gpus=0, taints=(), labels={RACK: "r1"}),
    ]
    job = gang(2, gpus=0, cluster="none", topology=required(RACK))
    assert place(job, nodes, [], DEFAULT_LEVELS).placement.domain == "r1"


def test_a_restarted_gang_keeps_its_unit_counting_its_own_workers_as_free():
    nodes = su_nodes("su-0", 8) + su_nodes("su-1", 4)
    # Its own workers are not among the loads: su-0 is emptier than su-1, and still chosen.
    job = with_placement(gang(4, topology=required()), "su-0")
    assert place(job, nodes, [], DEFAULT_LEVELS).placement.domain == "su-0"


def test_a_restarted_gang_whose_unit_filled_up_moves_to_another():
    nodes = su_nodes("su-0", 4) + su_nodes("su-1", 4)
    job = with_placement(gang(4, topology=required()), "su-0")
    decision = place(job, nodes, [busy("su-0-n3")], DEFAULT_LEVELS)
    assert decision.placement.domain == "su-1"


def test_unscheduled_workers_of_a_pinned_gang_take_room_in_their_unit():
    nodes = su_nodes("su-0", 4) + su_nodes("su-1", 5)
    pinned = TopologyPlacement(level=SU, domain="su-0")
    loads = [PodLoad({GPU: 8.0, "pods": 1.0}, None, pinned) for _ in range(2)]
    decision = place(gang(3, topology=required()), nodes, loads, DEFAULT_LEVELS)
    assert decision.placement.domain == "su-1"  # su-0 keeps only 2 nodes free


def test_unscheduled_workers_of_an_unpinned_gang_count_nowhere():
    free = free_by_node(su_nodes("su-0", 1), [PodLoad({GPU: 8.0}, None, None)])
    assert free["su-0-n0"][GPU] == 8.0


def test_preferred_without_room_starts_unpinned():
    nodes = su_nodes("su-0", 2)
    job = gang(3, topology={"level": SU, "mode": "Preferred"})
    decision = place(job, nodes, [], DEFAULT_LEVELS)
    assert (decision.placement, decision.waiting) == (None, None)


def test_blue_vela_prefers_one_scalable_unit_by_default():
    decision = place(gang(2), su_nodes("su-0", 2), [], DEFAULT_LEVELS)
    assert decision.placement == TopologyPlacement(level=SU, domain="su-0")
    assert decision.mode == "Preferred"


def test_a_profiles_default_level_the_operator_lacks_is_dropped():
    assert place(gang(2), su_nodes("su-0", 2), [], (RACK,)) == UNPINNED


def test_an_explicit_level_the_operator_lacks_waits_naming_the_ones_it_has():
    job = gang(2, topology=required("example.com/pod"))
    decision = place(job, su_nodes("su-0", 2), [], (SU, RACK))
    assert decision.reason == Reason.UNKNOWN_TOPOLOGY_LEVEL
    assert decision.never_fits is True
    assert decision.waiting == (
        "spec.topology.level example.com/pod is not a topology level of this operator"
        f" (it knows: {SU}, {RACK})"
    )


@pytest.mark.parametrize("cluster", ["vela", "none"])
def test_a_job_asking_for_no_topology_is_not_placed(cluster):
    assert place(gang(2, cluster=cluster), su_nodes("su-0", 2), [], DEFAULT_LEVELS) == UNPINNED


def test_the_gang_is_described_in_the_words_of_its_spec():
    assert describe_gang(gang(1, gpus=1)) == "1 worker x 1 GPU"
    assert describe_gang(gang(2, gpus=0, cluster="none")) == "2 workers x 4 CPU, 2Gi memory"


# -- admission and pinning ---------------------------------------------------------------------


def test_a_gang_the_queue_admits_still_waits_for_a_domain():
    decision = place(gang(3, topology=required()), su_nodes("su-0", 2), [], DEFAULT_LEVELS)
    combined = admit(ADMITTED, decision)
    assert combined.admitted is False
    assert combined.reason == Reason.NO_TOPOLOGY_DOMAIN
    assert combined.message == decision.waiting


def test_a_gang_the_queue_holds_back_waits_for_the_queue_first():
    queued = JobAdmission(False, "waiting for quota", reason=QueueReason.WAITING_FOR_QUOTA)
    decision = place(gang(3, topology=required()), su_nodes("su-0", 2), [], DEFAULT_LEVELS)
    assert admit(queued, decision) is queued
    assert admit(ADMITTED, UNPINNED) is ADMITTED


def test_the_default_levels_are_the_labels_the_test_clusters_nodes_carry():
    assert placement.SCALABLE_UNIT_LABEL == pools.SCALABLE_UNIT_LABEL
    assert placement.RACK_LABEL == pools.RACK_LABEL
    assert DEFAULT_LEVELS.index(pools.SCALABLE_UNIT_LABEL) < DEFAULT_LEVELS.index(pools.RACK_LABEL)
    assert pools.BLUE_VELA.nodes_per_su == 32  # an SU is 32 nodes on one leaf/spine group
    labels = pools.node_manifest(pools.BLUE_VELA, 0)["metadata"]["labels"]
    assert {SU, RACK, placement.HOSTNAME_LABEL} <= set(labels)
